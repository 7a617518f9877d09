terraform {
  required_version = ">= 1.5.0"

  required_providers {
    hcloud = {
      source = "hetznercloud/hcloud"
      # Pinned; Terraform records the exact build in .terraform.lock.hcl in
      # the working directory on the first run and keeps it from then on.
      version = "1.59.0"
    }
  }
}

# The API token is read from the environment (HCLOUD_TOKEN), never from a
# variable: variables are written to disk, credentials must not be.
provider "hcloud" {}
