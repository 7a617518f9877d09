provider "local" {}

nomad {
  namespaces = ["dev", "Prod_EU"]
}
