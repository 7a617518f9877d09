name = "platform"

vault {
  ha = false
}
