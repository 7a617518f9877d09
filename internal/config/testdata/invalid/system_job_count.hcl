provider "local" {}

jobs {
  fabio {
    count = 3
  }
  node_exporter {
    count = 2
  }
}
