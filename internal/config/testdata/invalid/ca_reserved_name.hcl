provider "local" {}

pki {
  ca "consul" {
    common_name = "my consul"
  }
}
