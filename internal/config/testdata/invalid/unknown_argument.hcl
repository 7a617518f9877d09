provider "local" {
  cores = 4
}
