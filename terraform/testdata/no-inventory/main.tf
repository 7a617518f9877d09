# A module that forgot the bootstrap_inventory output.

resource "terraform_data" "machine" {
  input = "10.0.0.1"
}

output "address" {
  value = terraform_data.machine.output
}
