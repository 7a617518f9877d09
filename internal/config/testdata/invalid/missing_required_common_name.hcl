provider "local" {}

pki {
  ca "apps" {
    ttl = "8760h"
  }
}
