# A bad value read with file() is refused without being printed: a webhook
# URL often carries its credentials.
provider "local" {}

monitoring {
  alert_webhook_url = "${file("webhook-url.txt")}/alert"
}
