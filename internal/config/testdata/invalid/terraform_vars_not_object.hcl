provider "terraform" {
  module = "terraform/digitalocean"
  vars   = ["fra1", 3]
}
