# The DigitalOcean module's infrastructure on Hetzner Cloud: a private
# network, servers and clients labelled by role, volumes on the clients, an
# SSH key and a firewall. Hetzner firewalls filter the public interface
# only; traffic on the private network is not filtered.

locals {
  vault_count = var.vault_ha ? 3 : 1
  prefix      = var.project_name
}

resource "hcloud_ssh_key" "bootstrap" {
  name       = var.ssh_key_name
  public_key = var.ssh_public_key
  labels     = { platform = local.prefix }
}

resource "hcloud_network" "this" {
  name     = var.network_name
  ip_range = var.network_ip_range
  labels   = { platform = local.prefix }
}

resource "hcloud_network_subnet" "this" {
  network_id   = hcloud_network.this.id
  type         = "cloud"
  network_zone = var.network_zone
  ip_range     = var.subnet_ip_range
}

# Every machine: SSH and the admin APIs from ssh_allowed_cidr only. Without
# outbound rules, outbound traffic is allowed.
resource "hcloud_firewall" "nodes" {
  name   = "${local.prefix}-nodes"
  labels = { platform = local.prefix }

  rule {
    direction  = "in"
    protocol   = "tcp"
    port       = "22"
    source_ips = [var.ssh_allowed_cidr]
  }

  dynamic "rule" {
    for_each = var.admin_ports
    content {
      direction  = "in"
      protocol   = "tcp"
      port       = tostring(rule.value)
      source_ips = [var.ssh_allowed_cidr]
    }
  }
}

# Clients serve the platform's web traffic (Fabio) to everyone on 80 and 443.
resource "hcloud_firewall" "web" {
  name   = "${local.prefix}-web"
  labels = { platform = local.prefix }

  dynamic "rule" {
    for_each = ["80", "443"]
    content {
      direction  = "in"
      protocol   = "tcp"
      port       = rule.value
      source_ips = ["0.0.0.0/0", "::/0"]
    }
  }
}

resource "hcloud_server" "server" {
  count        = var.num_servers
  name         = "${local.prefix}-server-${count.index + 1}"
  image        = var.image
  server_type  = var.server_type
  location     = var.location
  ssh_keys     = [hcloud_ssh_key.bootstrap.id]
  firewall_ids = [hcloud_firewall.nodes.id]
  labels = merge(
    { platform = local.prefix, role_server = "true" },
    count.index < local.vault_count ? { role_vault = "true" } : {},
  )

  public_net {
    ipv4_enabled = true
    ipv6_enabled = true
  }

  lifecycle {
    precondition {
      condition     = !var.vault_ha || var.num_servers >= 3
      error_message = "The vault_ha option runs Vault on three servers; set num_servers to 3 or more."
    }
  }
}

resource "hcloud_server" "client" {
  count        = var.num_clients
  name         = "${local.prefix}-client-${count.index + 1}"
  image        = var.image
  server_type  = var.client_type
  location     = var.location
  ssh_keys     = [hcloud_ssh_key.bootstrap.id]
  firewall_ids = [hcloud_firewall.nodes.id, hcloud_firewall.web.id]
  labels       = { platform = local.prefix, role_client = "true" }

  public_net {
    ipv4_enabled = true
    ipv6_enabled = true
  }
}

resource "hcloud_server_network" "server" {
  count     = var.num_servers
  server_id = hcloud_server.server[count.index].id
  subnet_id = hcloud_network_subnet.this.id
}

resource "hcloud_server_network" "client" {
  count     = var.num_clients
  server_id = hcloud_server.client[count.index].id
  subnet_id = hcloud_network_subnet.this.id
}

resource "hcloud_volume" "data" {
  count    = var.num_volumes
  name     = "${local.prefix}-data-${count.index + 1}"
  size     = var.volume_size
  location = var.location
  format   = "ext4"
  labels   = { platform = local.prefix }
}

# Volumes go to the clients in turn: volume 1 to client 1, and so on.
resource "hcloud_volume_attachment" "data" {
  count     = var.num_volumes
  volume_id = hcloud_volume.data[count.index].id
  server_id = hcloud_server.client[count.index % var.num_clients].id
  automount = true
}
