terraform {
  required_version = ">= 1.5.0"

  required_providers {
    digitalocean = {
      source = "digitalocean/digitalocean"
      # Pinned; Terraform records the exact build in .terraform.lock.hcl in
      # the working directory on the first run and keeps it from then on.
      version = "2.58.0"
    }
  }
}

# The access token is read from the environment (DIGITALOCEAN_TOKEN or
# DIGITALOCEAN_ACCESS_TOKEN), never from a variable: variables are written
# to disk, credentials must not be.
provider "digitalocean" {}
