provider "local" {}

pki {
  intermediate_ttl = "720h"
  leaf_ttl         = "31d"
}
