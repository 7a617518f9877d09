provider "local" {}

vault {
  key_shares    = 2
  key_threshold = 2
  pgp_keys      = ["webhook-url.txt", file("webhook-url.txt")]
}
