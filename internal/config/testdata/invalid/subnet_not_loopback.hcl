provider "local" {
  subnet = "10.0.1.0/24"
}
