provider "local" {}

nomad {
  namespaces        = ["dev", "prod"]
  deploy_namespaces = ["staging"]
}
