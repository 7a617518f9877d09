# The inventory contract (terraform/README.md): what every later stage of
# bootstrap reads. Fields beyond the contract (droplet_id, volumes) are
# ignored by bootstrap and kept for people.
output "bootstrap_inventory" {
  description = "The machines, their roles and how to reach them, as bootstrap's inventory contract (JSON)."
  value = jsonencode({
    version = 1
    nodes = concat(
      [for i, d in digitalocean_droplet.server : {
        name       = "server-${i + 1}"
        roles      = i < local.vault_count ? ["server", "vault"] : ["server"]
        public_ip  = d.ipv4_address
        private_ip = d.ipv4_address_private
        ssh        = { user = "root", port = 22 }
        droplet_id = d.id
      }],
      [for i, d in digitalocean_droplet.client : {
        name       = "client-${i + 1}"
        roles      = ["client"]
        public_ip  = d.ipv4_address
        private_ip = d.ipv4_address_private
        ssh        = { user = "root", port = 22 }
        droplet_id = d.id
        volumes = [for v in range(var.num_volumes) : {
          name = digitalocean_volume.data[v].name
          id   = digitalocean_volume.data[v].id
        } if v % var.num_clients == i]
        # The client's first volume holds the platform's data (Prometheus's
        # TSDB): bootstrap formats it when blank and mounts it.
        data_device = i < var.num_volumes ? "/dev/disk/by-id/scsi-0DO_Volume_${digitalocean_volume.data[i].name}" : null
      }],
    )
  })
}

output "vpc_id" {
  description = "The VPC the machines share."
  value       = digitalocean_vpc.this.id
}
