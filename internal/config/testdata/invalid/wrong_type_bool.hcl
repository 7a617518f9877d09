provider "local" {}

vault {
  ha = "maybe"
}
