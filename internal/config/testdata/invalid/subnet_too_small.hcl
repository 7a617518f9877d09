provider "local" {
  subnet = "127.0.1.0/29"
}
