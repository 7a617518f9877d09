provider "local" {}

monitoring {
  dashboards_dir = "no-such-dashboards"
}
