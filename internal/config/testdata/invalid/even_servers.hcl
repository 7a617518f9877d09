provider "local" {
  servers = 2
}
