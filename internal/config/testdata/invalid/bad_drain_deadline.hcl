provider "local" {}

nomad {
  drain_deadline = "soon"
}
