provider "local" {}

gitlab_runner {
  url   = "https://gitlab.example.com"
  token = "glrt-literal-token-in-the-file"
}
