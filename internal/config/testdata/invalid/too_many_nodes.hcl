provider "local" {
  servers = 7
  clients = 30
}
