datacenter = ""

provider "local" {}
