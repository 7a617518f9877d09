# A stand-in for a cloud module, for tests on a machine with no cloud: it
# "provisions" nodes on loopback addresses with only hashicorp/local,
# hashicorp/tls and the built-in terraform_data, and outputs the same
# bootstrap_inventory contract as terraform/digitalocean.

terraform {
  required_version = ">= 1.5.0"
  required_providers {
    local = {
      source  = "hashicorp/local"
      version = ">= 2.4.0"
    }
    tls = {
      source  = "hashicorp/tls"
      version = ">= 4.0.0"
    }
  }
}

variable "num_servers" {
  type    = number
  default = 3
}

variable "num_clients" {
  type    = number
  default = 2
}

variable "vault_ha" {
  type    = bool
  default = false
}

variable "address_prefix" {
  description = "First three octets of the nodes' loopback addresses, e.g. 127.0.9; servers get .1, .2, ..., clients follow."
  type        = string
  validation {
    condition     = can(regex("^127\\.[0-9]{1,3}\\.[0-9]{1,3}$", var.address_prefix))
    error_message = "The address_prefix must be the first three octets of a 127.0.0.0/8 address, e.g. 127.0.9."
  }
}

variable "ssh_port" {
  type    = number
  default = 22
}

variable "nodes_dir" {
  description = "Directory the per-node files are written to (the machines of this fake cloud)."
  type        = string
}

locals {
  servers = [for i in range(var.num_servers) : {
    name  = "server-${i + 1}"
    roles = i < (var.vault_ha ? 3 : 1) ? ["server", "vault"] : ["server"]
    ip    = "${var.address_prefix}.${i + 1}"
  }]
  clients = [for i in range(var.num_clients) : {
    name  = "client-${i + 1}"
    roles = ["client"]
    ip    = "${var.address_prefix}.${var.num_servers + i + 1}"
  }]
  nodes = { for n in concat(local.servers, local.clients) : n.name => n }
}

# Each node's host key, as a cloud image would generate on first boot.
resource "tls_private_key" "host" {
  for_each  = local.nodes
  algorithm = "ED25519"
}

# The "machine": a file describing it.
resource "local_file" "node" {
  for_each        = local.nodes
  filename        = "${var.nodes_dir}/${each.key}.json"
  file_permission = "0600"
  content = jsonencode({
    name          = each.key
    roles         = each.value.roles
    address       = each.value.ip
    host_key_file = "${var.nodes_dir}/${each.key}.host_key"
  })
}

resource "local_sensitive_file" "host_key" {
  for_each        = local.nodes
  filename        = "${var.nodes_dir}/${each.key}.host_key"
  file_permission = "0600"
  content         = tls_private_key.host[each.key].private_key_openssh
}

# A network-wide resource, like a cloud's VPC.
resource "terraform_data" "network" {
  input = "${var.address_prefix}.0/24"
}

output "bootstrap_inventory" {
  value = jsonencode({
    version = 1
    nodes = [for name, n in local.nodes : {
      name       = name
      roles      = n.roles
      public_ip  = n.ip
      private_ip = n.ip
      ssh        = { user = "root", port = var.ssh_port }
      # Not part of the contract: unknown fields must be ignored.
      machine_file    = local_file.node[name].filename
      machine_id      = local_file.node[name].id
      host_public_key = tls_private_key.host[name].public_key_openssh
      network         = terraform_data.network.output
    }]
  })
}
