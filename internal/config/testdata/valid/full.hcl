# Every block and argument bootstrap reads, each set away from its default.
name       = "acme-prod"
datacenter = "fra1"
region     = "europe"

provider "local" {
  servers = 5
  clients = 3
  subnet  = "127.0.7.0/24"
  bin_dir = "tools/bin"
}

vault {
  ha            = true
  nodes         = ["server-1", "server-3", "server-5"]
  key_shares    = 7
  key_threshold = 4
}

pki {
  root_ttl          = "175200h"
  intermediate_ttl  = "8760h"
  leaf_ttl          = "72h"
  revoke_root_token = false

  ca "apps" {
    common_name = file("apps-cn.txt")
    ttl         = "87600h"
    key_type    = "ec"
    key_bits    = 384

    intermediate "eu" {
      common_name = "apps eu intermediate"
      ttl         = "43800h"
    }

    role "web" {
      issuer             = "eu"
      allowed_domains    = ["web.apps.internal"]
      allow_subdomains   = true
      allow_bare_domains = true
      allow_ip_sans      = true
      server_flag        = true
      client_flag        = false
      key_usage          = ["DigitalSignature"]
      ext_key_usage      = ["ServerAuth"]
      key_type           = "rsa"
      key_bits           = 2048
      ttl                = "24h"
      max_ttl            = "168h"
    }

    role "any" {
      allow_any_name = true
    }
  }

  approle "web" {
    cas           = ["apps"]
    token_ttl     = "1h"
    secret_id_ttl = "168h"
  }
}

consul {
  domain = "cluster.internal"
  ui     = false
  dns    = false
}

nomad {
  namespaces        = ["dev", "staging", "prod"]
  deploy_namespaces = ["dev", "staging"]
  drain_deadline    = "90s"
}

jobs {
  driver = "docker"

  fabio {
    enabled = false
  }
  prometheus {
    image  = "prom/prometheus:v3.5.0"
    count  = 2
    cpu    = 500
    memory = 1024
  }
  alertmanager {
    image = "prom/alertmanager:v0.28.0"
  }
  grafana {
    memory = 512
  }
  node_exporter {
    cpu = 20
  }
}

monitoring {
  retention         = "30d"
  scrape_interval   = "10s"
  alert_webhook_url = "https://hooks.example.com/alert"
  dashboards_dir    = "dashboards"
}

gitlab_runner {
  url        = "https://gitlab.example.com"
  token      = env("BOOTSTRAP_TEST_RUNNER_TOKEN")
  executor   = "shell"
  concurrent = 4
  image      = "alpine:3.21"
}
