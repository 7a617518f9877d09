provider "local" {}

docker {
  package = "docker.io"
  daemon  = ["vfs"]
}
