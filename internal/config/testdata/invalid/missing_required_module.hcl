provider "terraform" {
  vars = {
    region = "fra1"
  }
}
