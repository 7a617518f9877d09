# Unseal key shares encrypted to PGP keys: a path, and keys read with file(),
# armored and base64.
provider "local" {}

vault {
  key_shares    = 3
  key_threshold = 2
  pgp_keys = [
    "pgp/alice.asc",
    file("pgp/bob.b64"),
    file("pgp/alice.asc"),
  ]
}
