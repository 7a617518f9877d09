provider "local" {}

vault {
  key_shares    = 1
  key_threshold = 1
  pgp_keys      = ["pgp/secret.asc"]
}
