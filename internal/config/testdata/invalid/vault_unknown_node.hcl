provider "local" {}

vault {
  nodes = ["server-4"]
}
