provider "local" {}

pki {
  ca "apps" {
    common_name = "apps.internal"
  }

  approle "web" {
    cas           = ["apps"]
    secret_id_ttl = "10m"
  }
}
