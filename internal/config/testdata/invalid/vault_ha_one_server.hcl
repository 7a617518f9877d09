provider "local" {
  servers = 1
}

vault {
  ha = true
}
