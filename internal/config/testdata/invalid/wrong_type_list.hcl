provider "local" {}

nomad {
  namespaces = "dev"
}
