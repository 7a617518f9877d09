provider "local" {}

vault {
  key_threshold = 2
  pgp_keys      = ["../valid/pgp/alice.asc", "../valid/pgp/bob.b64"]
}
