provider "local" {}

gitlab_runner {
  url   = "gitlab.example.com"
  token = env("HOME")
}
