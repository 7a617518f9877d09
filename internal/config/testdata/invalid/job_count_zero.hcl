provider "local" {}

jobs {
  prometheus {
    count = 0
  }
}
