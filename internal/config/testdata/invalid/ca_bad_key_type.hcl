provider "local" {}

pki {
  ca "apps" {
    common_name = "apps.internal"
    key_type    = "dsa"
  }
}
