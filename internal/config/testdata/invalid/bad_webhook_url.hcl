provider "local" {}

monitoring {
  alert_webhook_url = "hooks.example.com/alert"
}
