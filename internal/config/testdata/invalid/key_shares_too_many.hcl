provider "local" {}

vault {
  key_shares = 11
}
