provider "local" {}

pki {
  leaf_ttl = "90s"
}
