provider "local" {
  clients = null
}
