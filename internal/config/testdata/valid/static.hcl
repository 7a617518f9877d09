provider "static" {
  node "server-1" {
    roles      = ["server", "vault"]
    public_ip  = "203.0.113.10"
    private_ip = "10.0.0.10"
    ssh {
      user             = "admin"
      port             = 2222
      private_key_file = "~/.ssh/id_ed25519"
    }
  }
  node "client-1" {
    roles      = ["client"]
    private_ip = "10.0.0.20"
  }
}
