provider "local" {}

nomad {
  drain_deadline = "30d"
}
