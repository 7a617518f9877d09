provider "local" {}

jobs {
  alertmanager {
    count = 2
  }
}
