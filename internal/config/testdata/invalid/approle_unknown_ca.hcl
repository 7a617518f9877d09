provider "local" {}

pki {
  ca "apps" {
    common_name = "apps.internal"
  }

  approle "web" {
    cas = ["apps", "payments"]
  }
}
