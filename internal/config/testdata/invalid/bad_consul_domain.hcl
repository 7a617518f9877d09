provider "local" {}

consul {
  domain = "Consul_DNS"
}
