provider "local" {}

loadbalancer {
  port = 80
}
