provider "local" {}

gitlab_runner {
  url   = "https://gitlab.example.com"
  token = env("BOOTSTRAP_TEST_UNSET_TOKEN")
}
