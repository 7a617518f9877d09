provider "local" {}

vault {
  key_shares    = 2
  key_threshold = 1
  pgp_keys = [
    "../valid/pgp/alice.asc",
    "keys/carol.asc",
  ]
}
