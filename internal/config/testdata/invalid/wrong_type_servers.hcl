provider "local" {
  servers = "three"
}
