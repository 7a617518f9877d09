provider "terraform" {
  module = "terraform/digitalocean"
  vars = {
    region       = "fra1"
    server_count = 3
    ssh_keys     = ["laptop", "ci"]
  }
  backend     = "s3"
  backend_config = {
    bucket = "acme-tfstate"
  }
  ssh_timeout = "10m"
}
