provider "local" {}

nomad {
  namespaces = ["dev", "prod", "dev"]
}
