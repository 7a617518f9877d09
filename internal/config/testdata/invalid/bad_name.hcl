name = "My Platform"

provider "local" {}
