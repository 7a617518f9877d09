provider "local" {
  clients = 0
}
