provider "local" {}

nomad {
  namespaces = ["dev", "dev-eu"]
}
