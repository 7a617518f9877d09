# The variables of the dissertation's Table 2 (except access_token, which
# comes from the environment), plus what the dissertation did by hand: the
# SSH public key and the address range allowed to reach the machines.

variable "vpc_name" {
  description = "Name of the Virtual Private Cloud."
  type        = string
  default     = "mid-network"
}

variable "vpc_ip_range" {
  description = "IP range of the Virtual Private Cloud."
  type        = string
  default     = "10.10.10.0/24"
  validation {
    condition     = can(cidrhost(var.vpc_ip_range, 0))
    error_message = "The vpc_ip_range must be a CIDR range such as 10.10.10.0/24."
  }
}

variable "region" {
  description = "Region to deploy the resources in."
  type        = string
  default     = "lon1"
}

variable "num_servers" {
  description = "Number of servers (Consul and Nomad servers; Vault runs on the first one, or the first three with vault_ha)."
  type        = number
  default     = 3
  validation {
    condition     = var.num_servers >= 1 && var.num_servers % 2 == 1
    error_message = "The num_servers must be odd (1, 3, 5) so Consul and Nomad keep a quorum."
  }
}

variable "num_clients" {
  description = "Number of clients (Nomad clients that run the jobs)."
  type        = number
  default     = 2
  validation {
    condition     = var.num_clients >= 1
    error_message = "The num_clients must be at least 1: the platform jobs need a client."
  }
}

variable "num_volumes" {
  description = "Number of block storage volumes, attached to the clients in turn."
  type        = number
  default     = 1
  validation {
    condition     = var.num_volumes >= 0
    error_message = "The num_volumes cannot be negative."
  }
}

variable "volume_size" {
  description = "Size in GB of each volume."
  type        = number
  default     = 1
}

variable "project_name" {
  description = "Unique project name in the DigitalOcean account; also prefixes the resource names."
  type        = string
  default     = "mid"
}

variable "ssh_key_name" {
  description = "Name of the SSH key as uploaded to DigitalOcean."
  type        = string
  default     = "mid-ssh-key"
}

variable "ssh_public_key" {
  description = "Public key (OpenSSH format) of the key pair bootstrap generated in its keys stage."
  type        = string
  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp[0-9]+) ", var.ssh_public_key))
    error_message = "The ssh_public_key must be an OpenSSH public key (ssh-ed25519 AAAA...)."
  }
}

variable "ssh_allowed_cidr" {
  description = "Address range allowed to reach SSH and the Vault, Consul and Nomad APIs, e.g. your office or CI runner, 203.0.113.0/24. No default: the machines are not open to the world."
  type        = string
  validation {
    condition     = can(cidrhost(var.ssh_allowed_cidr, 0))
    error_message = "The ssh_allowed_cidr must be a CIDR range such as 203.0.113.7/32."
  }
}

variable "admin_ports" {
  description = "Ports opened to ssh_allowed_cidr besides SSH: Vault 8200, Consul 8500/8501, Nomad 4646 (bootstrap talks to these APIs from where it runs), and the platform's Fabio 9999 (Prometheus, Grafana, Alertmanager; it listens on the public address only with ingress { platform = true })."
  type        = list(number)
  default     = [8200, 8500, 8501, 4646, 9999]
}

variable "vault_ha" {
  description = "Tag the first three servers vault (an HA Vault cluster) instead of the first one."
  type        = bool
  default     = false
}

variable "image" {
  description = "Droplet image."
  type        = string
  default     = "debian-12-x64"
}

# Table 1: servers are Basic Droplets with 2 GB of RAM, 1 core and 50 GB of
# disk; clients have 1 GB of RAM, 1 core and 25 GB.
variable "server_size" {
  description = "Droplet size of the servers."
  type        = string
  default     = "s-1vcpu-2gb"
}

variable "client_size" {
  description = "Droplet size of the clients."
  type        = string
  default     = "s-1vcpu-1gb"
}
