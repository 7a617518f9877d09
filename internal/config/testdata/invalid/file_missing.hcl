provider "local" {}

pki {
  ca "apps" {
    common_name = file("no-such-name.txt")
  }
}
