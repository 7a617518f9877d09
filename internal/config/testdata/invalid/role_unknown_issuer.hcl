provider "local" {}

pki {
  ca "apps" {
    common_name = "apps.internal"

    intermediate "eu" {
      common_name = "apps eu"
    }

    role "web" {
      issuer          = "us"
      allowed_domains = ["web.internal"]
    }
  }
}
