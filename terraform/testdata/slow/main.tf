# A module with a resource whose creation takes a minute the first time, so
# a test can interrupt an apply in the middle. The marker file tells the
# test the slow part has started; once it exists the resource is quick.

variable "marker" {
  type = string
}

variable "address_prefix" {
  type = string
}

resource "terraform_data" "first" {
  input = "first"
}

resource "terraform_data" "slow" {
  input = terraform_data.first.output

  provisioner "local-exec" {
    command = "[ -e \"$MARKER\" ] || { touch \"$MARKER\"; exec sleep 60; }"
    environment = {
      MARKER = var.marker
    }
  }
}

output "bootstrap_inventory" {
  value = jsonencode({
    version = 1
    nodes = [
      { name = "server-1", roles = ["server", "vault"], private_ip = "${var.address_prefix}.1", machine = terraform_data.slow.id },
      { name = "client-1", roles = ["client"], private_ip = "${var.address_prefix}.2" },
    ]
  })
}
