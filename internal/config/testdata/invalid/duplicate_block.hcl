provider "local" {}

vault {
  ha = true
}

vault {
  key_shares = 3
}
