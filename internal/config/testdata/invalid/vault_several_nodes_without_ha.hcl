provider "local" {}

vault {
  nodes = ["server-1", "server-2"]
}
