# Proves that a credential in the environment reaches Terraform (a cloud
# provider would read it from there) without being written anywhere: the
# probe records only a SHA-256 of DIGITALOCEAN_TOKEN.

variable "probe_file" {
  type = string
}

variable "address_prefix" {
  type = string
}

resource "terraform_data" "probe" {
  input = var.probe_file

  provisioner "local-exec" {
    command = "printf %s \"$DIGITALOCEAN_TOKEN\" | sha256sum | cut -d' ' -f1 > \"$PROBE_FILE\""
    environment = {
      PROBE_FILE = var.probe_file
    }
  }
}

output "bootstrap_inventory" {
  value = jsonencode({
    version = 1
    nodes = [
      { name = "server-1", roles = ["server", "vault"], private_ip = "${var.address_prefix}.1", probe = terraform_data.probe.id },
      { name = "client-1", roles = ["client"], private_ip = "${var.address_prefix}.2" },
    ]
  })
}
