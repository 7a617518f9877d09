provider "local" {}

monitoring {
  scrape_interval = "500ms"
}
