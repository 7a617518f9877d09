provider "local" {
  servers = 9
}
