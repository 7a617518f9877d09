provider "local" {}

vault {
  key_shares    = 3
  key_threshold = 4
}
