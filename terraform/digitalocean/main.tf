# The dissertation's DigitalOcean infrastructure (section 5.2.1, Table 1):
# a VPC, server and client Droplets tagged server/client/vault, block
# storage volumes on the clients, plus what it left to a VPN or to manual
# steps: the SSH key upload, a firewall and the project.

locals {
  vault_count = var.vault_ha ? 3 : 1
  # Resource names carry the project name, so two platforms can share an
  # account.
  prefix = var.project_name
}

resource "digitalocean_vpc" "this" {
  name     = var.vpc_name
  region   = var.region
  ip_range = var.vpc_ip_range
}

resource "digitalocean_ssh_key" "bootstrap" {
  name       = var.ssh_key_name
  public_key = var.ssh_public_key
}

# Droplet tags (server, client, vault, and the project name) are created by
# DigitalOcean when first used. They are shared by the whole account, so
# they are not Terraform resources (destroying one platform must not strip
# another's tags), and the firewalls below name Droplets by id, not by tag.

resource "digitalocean_droplet" "server" {
  count      = var.num_servers
  name       = "${local.prefix}-server-${count.index + 1}"
  image      = var.image
  size       = var.server_size
  region     = var.region
  vpc_uuid   = digitalocean_vpc.this.id
  ssh_keys   = [digitalocean_ssh_key.bootstrap.fingerprint]
  tags       = count.index < local.vault_count ? ["server", "vault", local.prefix] : ["server", local.prefix]
  monitoring = true

  lifecycle {
    precondition {
      condition     = !var.vault_ha || var.num_servers >= 3
      error_message = "The vault_ha option runs Vault on three servers; set num_servers to 3 or more."
    }
  }
}

resource "digitalocean_droplet" "client" {
  count      = var.num_clients
  name       = "${local.prefix}-client-${count.index + 1}"
  image      = var.image
  size       = var.client_size
  region     = var.region
  vpc_uuid   = digitalocean_vpc.this.id
  ssh_keys   = [digitalocean_ssh_key.bootstrap.fingerprint]
  tags       = ["client", local.prefix]
  monitoring = true
}

resource "digitalocean_volume" "data" {
  count                   = var.num_volumes
  name                    = "${local.prefix}-data-${count.index + 1}"
  region                  = var.region
  size                    = var.volume_size
  initial_filesystem_type = "ext4"
  description             = "Persistent storage for Nomad jobs on ${local.prefix}-client-${count.index % var.num_clients + 1}"
}

# Volumes go to the clients in turn: volume 1 to client 1, and so on.
resource "digitalocean_volume_attachment" "data" {
  count      = var.num_volumes
  droplet_id = digitalocean_droplet.client[count.index % var.num_clients].id
  volume_id  = digitalocean_volume.data[count.index].id
}

# Every machine: SSH and the admin APIs from ssh_allowed_cidr only, anything
# from inside the VPC (Consul, Nomad and Vault talk to each other there),
# anything out.
resource "digitalocean_firewall" "nodes" {
  name        = "${local.prefix}-nodes"
  droplet_ids = concat(digitalocean_droplet.server[*].id, digitalocean_droplet.client[*].id)

  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = [var.ssh_allowed_cidr]
  }

  dynamic "inbound_rule" {
    for_each = var.admin_ports
    content {
      protocol         = "tcp"
      port_range       = tostring(inbound_rule.value)
      source_addresses = [var.ssh_allowed_cidr]
    }
  }

  dynamic "inbound_rule" {
    for_each = ["tcp", "udp"]
    content {
      protocol         = inbound_rule.value
      port_range       = "1-65535"
      source_addresses = [var.vpc_ip_range]
    }
  }

  inbound_rule {
    protocol         = "icmp"
    source_addresses = [var.vpc_ip_range]
  }

  dynamic "outbound_rule" {
    for_each = ["tcp", "udp"]
    content {
      protocol              = outbound_rule.value
      port_range            = "1-65535"
      destination_addresses = ["0.0.0.0/0", "::/0"]
    }
  }

  outbound_rule {
    protocol              = "icmp"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
}

# Clients serve the platform's web traffic (Fabio) to everyone on 80 and
# 443, and nothing else.
resource "digitalocean_firewall" "web" {
  name        = "${local.prefix}-web"
  droplet_ids = digitalocean_droplet.client[*].id

  dynamic "inbound_rule" {
    for_each = ["80", "443"]
    content {
      protocol         = "tcp"
      port_range       = inbound_rule.value
      source_addresses = ["0.0.0.0/0", "::/0"]
    }
  }
}

resource "digitalocean_project" "this" {
  name        = var.project_name
  description = "HashiCorp platform (Vault, Consul, Nomad) managed by bootstrap"
  purpose     = "Operational / Developer tooling"
  environment = "Production"
  resources = concat(
    digitalocean_droplet.server[*].urn,
    digitalocean_droplet.client[*].urn,
    digitalocean_volume.data[*].urn,
  )
}
