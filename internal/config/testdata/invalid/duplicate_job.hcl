provider "local" {}

jobs {
  grafana {
    memory = 512
  }
  grafana {
    cpu = 400
  }
}
