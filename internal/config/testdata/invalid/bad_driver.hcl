provider "local" {}

jobs {
  driver = "podman"
}
