provider "static" {
  node "a" {
    roles      = ["server", "client"]
    private_ip = "10.0.0.1"
  }
  node "b" {
    roles      = ["server", "client"]
    private_ip = "10.0.0.2"
  }
}
