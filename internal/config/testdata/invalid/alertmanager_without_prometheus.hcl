provider "local" {}

jobs {
  prometheus {
    enabled = false
  }
  alertmanager {
    enabled = true
  }
}
