provider "local" {}

pki {
  root_ttl = "forever"
}
