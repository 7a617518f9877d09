provider "local" {}

jobs {
  loki {
    enabled = true
  }
}
