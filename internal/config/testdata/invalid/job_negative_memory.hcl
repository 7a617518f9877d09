provider "local" {}

jobs {
  grafana {
    memory = -256
  }
}
