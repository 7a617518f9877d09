provider "static" {
  node "a" {
    roles      = ["server", "client", "database"]
    private_ip = "10.0.0.1"
  }
}
