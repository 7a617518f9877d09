provider "static" {
  node "server-1" {
    roles      = ["server", "vault"]
    private_ip = "10.0.0.10"
  }
  node "client-1" {
    roles      = ["client"]
    public_ip  = "203.0.113.20"
    private_ip = "10.0.0.20"
  }
}

# The redirect to HTTPS works from port 80 only
ingress {
  namespace = "prod"
  port      = 8080
  tls {
    cert_file = "tls-other.crt"
    key_file  = "tls-other.key"
  }
}
