# The machine lab as a Terraform module: real systemd machines in
# systemd-nspawn containers on this box (internal/lab), so the terraform
# provider's whole path (apply, configure over SSH, down, destroy) runs
# without a cloud. Needs root, and the lab command: go build -o bin/lab ./tools/lab
# (make build does).
#
# The lab is one resource: changing the machine count replaces it (every
# machine is made again), unlike a cloud module. It is a lab.

terraform {
  required_version = ">= 1.5.0"
  required_providers {
    local = {
      source  = "hashicorp/local"
      version = ">= 2.4.0"
    }
  }
}

variable "lab_command" {
  description = "Absolute path of the lab command (bin/lab)."
  type        = string
  validation {
    condition     = startswith(var.lab_command, "/")
    error_message = "lab_command must be an absolute path, e.g. \"/home/me/bootstrap/bin/lab\": Terraform runs in bootstrap's state directory, not next to platform.hcl."
  }
}

variable "dir" {
  description = "Absolute path of the lab's directory: its state, the machines' overlays and inventory.json."
  type        = string
  validation {
    condition     = startswith(var.dir, "/")
    error_message = "dir must be an absolute path, e.g. \"/home/me/bootstrap/.lab-tf\": Terraform runs in bootstrap's state directory, not next to platform.hcl."
  }
}

variable "bin_dir" {
  description = "Absolute path of the binaries the machines share read-only (the raw_exec profile of the platform jobs runs them); the same as the provider's bin_dir."
  type        = string
  validation {
    condition     = startswith(var.bin_dir, "/")
    error_message = "bin_dir must be an absolute path, e.g. \"/home/me/bootstrap/bin\"."
  }
}

variable "name" {
  description = "The lab's name: 1 to 6 letters or digits, unique among the labs running on this box."
  type        = string
  default     = "tf"
}

variable "net" {
  description = "The lab's network: 10.213.<net>.0/24, unique among the labs running on this box."
  type        = number
  default     = 1
}

variable "num_servers" {
  type    = number
  default = 3
}

variable "num_clients" {
  type    = number
  default = 2
}

variable "data_volumes" {
  description = "Machines that get a data volume (a loop device standing in for a cloud volume), e.g. [\"client-1\"]."
  type        = list(string)
  default     = []
}

variable "ssh_public_key" {
  description = "The public key root accepts besides the lab's own (bootstrap passes its keys stage's key)."
  type        = string
}

resource "terraform_data" "lab" {
  input = {
    lab     = var.lab_command
    dir     = var.dir
    bin_dir = var.bin_dir
    name    = var.name
    net     = var.net
    servers = var.num_servers
    clients = var.num_clients
    key     = var.ssh_public_key
    volumes = join(",", var.data_volumes)
  }

  # A lab whose creation was killed before Terraform recorded it is
  # removed first (lab down is a no-op without one): Terraform creates it
  # again from the start.
  provisioner "local-exec" {
    command = <<-EOT
      set -e
      "$LAB" down -dir "$DIR"
      mkdir -p -m 0700 "$DIR"
      printf '%s\n' "$KEY" > "$DIR/authorized_key"
      exec "$LAB" up -dir "$DIR" -name "$NAME" -net "$NET" -servers "$SERVERS" -clients "$CLIENTS" -bin "$BIN" -authorized-key "$DIR/authorized_key" -data-volumes "$VOLUMES"
    EOT
    environment = {
      LAB     = self.input.lab
      DIR     = self.input.dir
      BIN     = self.input.bin_dir
      NAME    = self.input.name
      NET     = self.input.net
      SERVERS = self.input.servers
      CLIENTS = self.input.clients
      KEY     = self.input.key
      VOLUMES = self.input.volumes
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "rm -f \"$DIR/authorized_key\" && exec \"$LAB\" down -dir \"$DIR\""
    environment = {
      LAB = self.input.lab
      DIR = self.input.dir
    }
  }
}

# What the lab wrote once its machines answered SSH.
data "local_file" "inventory" {
  filename   = "${var.dir}/inventory.json"
  depends_on = [terraform_data.lab]
}

output "bootstrap_inventory" {
  description = "The lab's machines in bootstrap's inventory contract (JSON), reached with bootstrap's own key."
  value = jsonencode({
    version = 1
    nodes = [for n in jsondecode(data.local_file.inventory.content).nodes : {
      name        = n.name
      roles       = n.roles
      private_ip  = n.private_ip
      ssh         = { user = "root", port = 22 }
      data_device = try(n.data_device, null)
    }]
  })
}
