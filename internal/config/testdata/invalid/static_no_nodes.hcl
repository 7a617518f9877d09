provider "static" {}
