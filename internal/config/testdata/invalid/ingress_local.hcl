provider "local" {}

ingress {
  namespace = "prod"
  port      = 0
}
