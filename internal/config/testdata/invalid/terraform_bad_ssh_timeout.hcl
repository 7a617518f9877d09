provider "terraform" {
  module      = "terraform/digitalocean"
  ssh_timeout = "soon"
}
