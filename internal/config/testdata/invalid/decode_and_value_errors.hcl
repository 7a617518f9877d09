provider "local" {
  servers = 2
  clients = "two"
}

nomad {
  namespaces = ["dev", "dev"]
  bogus      = true
}
