provider "local" {}

provider "static" {
  inventory = "inventory.json"
}
