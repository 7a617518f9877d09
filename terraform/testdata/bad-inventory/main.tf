# A module whose bootstrap_inventory breaks the contract (an odd name, an
# unknown role, an even number of servers). With known = true the value is
# known at plan time; otherwise only after apply.

variable "known" {
  type    = bool
  default = true
}

resource "terraform_data" "machine" {
  input = "10.0.0.1"
}

locals {
  ip = var.known ? "10.0.0.1" : terraform_data.machine.output
}

output "bootstrap_inventory" {
  value = jsonencode({
    version = 1
    nodes = [
      { name = "Server_1", roles = ["server"], private_ip = local.ip },
      { name = "server-2", roles = ["server", "database"], private_ip = local.ip },
      { name = "client-1", roles = ["client"], private_ip = local.ip },
    ]
  })
}
