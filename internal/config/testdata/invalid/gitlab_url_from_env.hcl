# A bad value read with env() is refused without being printed: it may be a
# secret (HOME stands in for one; it is set wherever the tests run).
provider "local" {}

gitlab_runner {
  url   = env("HOME")
  token = env("HOME")
}
