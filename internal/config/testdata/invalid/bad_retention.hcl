provider "local" {}

monitoring {
  retention = "a while"
}
