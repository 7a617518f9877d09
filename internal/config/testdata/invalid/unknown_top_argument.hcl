colour = "blue"

provider "local" {}
