provider "local" {}

pki {
  root_ttl         = "8760h"
  intermediate_ttl = "17520h"
}
