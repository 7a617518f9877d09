provider "local" {}

gitlab_runner {
  url   = "https://gitlab.example.com"
  token = env("HOME")
  tags  = ["nomad", "linux"]
}
