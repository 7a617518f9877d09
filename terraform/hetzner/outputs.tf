# The inventory contract (terraform/README.md). Fields beyond the contract
# (server_id, volumes) are ignored by bootstrap and kept for people.
output "bootstrap_inventory" {
  description = "The machines, their roles and how to reach them, as bootstrap's inventory contract (JSON)."
  value = jsonencode({
    version = 1
    nodes = concat(
      [for i, s in hcloud_server.server : {
        name       = "server-${i + 1}"
        roles      = i < local.vault_count ? ["server", "vault"] : ["server"]
        public_ip  = s.ipv4_address
        private_ip = hcloud_server_network.server[i].ip
        ssh        = { user = "root", port = 22 }
        server_id  = s.id
      }],
      [for i, s in hcloud_server.client : {
        name       = "client-${i + 1}"
        roles      = ["client"]
        public_ip  = s.ipv4_address
        private_ip = hcloud_server_network.client[i].ip
        ssh        = { user = "root", port = 22 }
        server_id  = s.id
        volumes = [for v in range(var.num_volumes) : {
          name = hcloud_volume.data[v].name
          id   = hcloud_volume.data[v].id
        } if v % var.num_clients == i]
        # The client's first volume holds the platform's data (Prometheus's
        # TSDB): bootstrap formats it when blank and mounts it.
        data_device = i < var.num_volumes ? hcloud_volume.data[i].linux_device : null
      }],
    )
  })
}

output "network_id" {
  description = "The private network the machines share."
  value       = hcloud_network.this.id
}
