provider "local" {}

pki {
  ca "apps" {
    common_name = "apps.internal"
  }
  ca "apps" {
    common_name = "apps2.internal"
  }
}
