# The DigitalOcean module's variables (the dissertation's Table 2) in
# Hetzner Cloud's terms.

variable "network_name" {
  description = "Name of the private network."
  type        = string
  default     = "mid-network"
}

variable "network_ip_range" {
  description = "IP range of the private network."
  type        = string
  default     = "10.10.0.0/16"
}

variable "subnet_ip_range" {
  description = "IP range of the subnet the machines are in; inside network_ip_range."
  type        = string
  default     = "10.10.10.0/24"
  validation {
    condition     = can(cidrhost(var.subnet_ip_range, 0))
    error_message = "The subnet_ip_range must be a CIDR range such as 10.10.10.0/24."
  }
}

variable "network_zone" {
  description = "Network zone of the subnet; must contain location."
  type        = string
  default     = "eu-central"
}

variable "location" {
  description = "Location to deploy the resources in (nbg1, fsn1, hel1 are in eu-central)."
  type        = string
  default     = "nbg1"
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
  description = "Number of volumes, attached to the clients in turn."
  type        = number
  default     = 1
  validation {
    condition     = var.num_volumes >= 0
    error_message = "The num_volumes cannot be negative."
  }
}

variable "volume_size" {
  description = "Size in GB of each volume (Hetzner's minimum is 10)."
  type        = number
  default     = 10
  validation {
    condition     = var.volume_size >= 10
    error_message = "Hetzner Cloud volumes are at least 10 GB."
  }
}

variable "project_name" {
  description = "Prefix of every resource name and value of the platform label; unique within the Hetzner Cloud project."
  type        = string
  default     = "mid"
}

variable "ssh_key_name" {
  description = "Name of the SSH key as uploaded to Hetzner Cloud."
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
  description = "Address range allowed to reach SSH and the Vault, Consul and Nomad APIs, e.g. 203.0.113.0/24. No default: the machines are not open to the world."
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
  description = "Label the first three servers vault (an HA Vault cluster) instead of the first one."
  type        = bool
  default     = false
}

variable "image" {
  description = "Server image."
  type        = string
  default     = "debian-12"
}

variable "server_type" {
  description = "Server type of the servers."
  type        = string
  default     = "cx22"
}

variable "client_type" {
  description = "Server type of the clients."
  type        = string
  default     = "cx22"
}
