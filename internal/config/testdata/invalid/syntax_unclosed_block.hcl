provider "local" {
  servers = 3
