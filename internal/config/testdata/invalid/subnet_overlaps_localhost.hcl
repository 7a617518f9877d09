provider "local" {
  subnet = "127.0.0.0/24"
}
