provider "local" {}

nomad {
  namespaces = ["general", "dev"]
}
