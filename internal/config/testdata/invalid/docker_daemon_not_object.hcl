provider "static" {
  node "server-1" {
    roles      = ["server", "vault"]
    private_ip = "10.0.0.10"
  }
  node "client-1" {
    roles      = ["client"]
    private_ip = "10.0.0.20"
  }
}

docker {
  daemon = "vfs"
}
