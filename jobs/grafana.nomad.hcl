# Grafana with the Prometheus datasource and the platform's dashboards
# provisioned (the dissertation's section 5.2.4 and listing 5.6: here the
# dashboards travel inside the job, from the bootstrap binary, instead of
# being downloaded as artifacts).
#
# Variables:
#   datacenters       list(string)  datacenters to run in (default ["*"])
#   driver            string        "docker" (image, default), "raw_exec" or "exec" (binary)
#   image, binary     string        Grafana image (docker) / absolute path of grafana (raw_exec, exec)
#   homepath          string        raw_exec/exec: Grafana's home (conf/defaults.ini, public/)
#   count             number        instances (default 1)
#   cpu, memory       number        MHz and MB reserved (default 300, 512)
#   datasources_yml   string        datasource provisioning (monitoring.GrafanaDatasources), required
#   dashboards_yml    string        dashboard provider (monitoring.GrafanaDashboardProvider), required
#   dashboards        map(string)   dashboards, file name => JSON (monitoring.Dashboards)
#   prometheus_url    string        URL of Prometheus for the datasource (default: through the
#                                   node's Fabio, http://<node_address>:9999/prometheus)
#   scrape_interval   string        Prometheus' scrape interval, the datasource's time step (default "15s")
#   route_prefix      string        path Grafana serves under (default "/grafana": its Fabio route)
#   root_url          string        URL users reach Grafana at (default: the node's Fabio)
#   admin_user        string        administrator login (default "admin")
#   use_vault         bool          read the admin password from Vault (default true); false only
#                                   for throwaway test clusters (Grafana then keeps "admin")
#   vault_role        string        Vault JWT role for the workload identity ("" = default)
#
# Secrets: the administrator password is read from Vault at
# secret/data/general/grafana/admin, field "password", into the task's
# environment; it is never in the job.

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "driver" {
  type    = string
  default = "docker"
  validation {
    condition     = contains(["docker", "raw_exec", "exec"], var.driver)
    error_message = "The driver must be docker, raw_exec or exec."
  }
}

# Named from tools/versions.env (jobs.Images, which the jobs stage passes);
# jobs.TestImageDefaults keeps this default the same. GRAFANA_IMAGE_VERSION
# is not the Grafana the tests run: that build has no image.
variable "image" {
  type    = string
  default = "grafana/grafana-oss:10.4.19"
}

variable "binary" {
  type    = string
  default = "/usr/local/bin/grafana"
}

variable "homepath" {
  type    = string
  default = "/usr/share/grafana"
}

variable "count" {
  type    = number
  default = 1
}

variable "cpu" {
  type    = number
  default = 300
}

variable "memory" {
  type    = number
  default = 512
}

variable "datasources_yml" {
  type = string
}

variable "dashboards_yml" {
  type = string
}

variable "dashboards" {
  type    = map(string)
  default = {}
}

variable "prometheus_url" {
  type    = string
  default = ""
}

variable "scrape_interval" {
  type    = string
  default = "15s"
}

variable "route_prefix" {
  type    = string
  default = "/grafana"
}

variable "root_url" {
  type    = string
  default = ""
}

variable "admin_user" {
  type    = string
  default = "admin"
}

variable "use_vault" {
  type    = bool
  default = true
}

variable "vault_role" {
  type    = string
  default = ""
}

locals {
  docker = var.driver == "docker"
  ldelim = "[[nomad-template-unused"
  rdelim = "nomad-template-unused]]"
  # The official image runs as grafana (472).
  file_uid = local.docker ? 472 : -1

  args = concat(
    ["server"],
    local.docker ? [] : ["--homepath", var.homepath],
  )
}

job "grafana" {
  namespace   = "general"
  datacenters = var.datacenters
  type        = "service"

  update {
    max_parallel     = 1
    health_check     = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    auto_revert      = true
  }

  group "grafana" {
    count = var.count

    network {
      port "http" {}
    }

    # Grafana's SQLite database (users, preferences) outlives an update.
    ephemeral_disk {
      sticky  = true
      migrate = true
      size    = 300
    }

    service {
      name     = "grafana"
      port     = "http"
      address  = "${meta.node_address}"
      provider = "consul"
      tags     = ["prometheus", "urlprefix-${var.route_prefix}"]
      meta {
        metrics_path = "${var.route_prefix}/metrics"
      }

      check {
        name     = "health"
        type     = "http"
        path     = "${var.route_prefix}/api/health"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "grafana" {
      driver = var.driver

      dynamic "config" {
        for_each = local.docker ? [1] : []
        content {
          image        = var.image
          args         = local.args
          network_mode = "host"
        }
      }

      dynamic "config" {
        for_each = local.docker ? [] : [1]
        content {
          command = var.binary
          args    = local.args
        }
      }

      env {
        GF_SERVER_HTTP_ADDR             = "${meta.node_address}"
        GF_SERVER_HTTP_PORT             = "${NOMAD_PORT_http}"
        GF_SERVER_ROOT_URL              = var.root_url != "" ? var.root_url : "http://${meta.node_address}:9999${var.route_prefix}/"
        GF_SERVER_SERVE_FROM_SUB_PATH   = "true"
        GF_PATHS_DATA                   = "${NOMAD_ALLOC_DIR}/data/grafana"
        GF_PATHS_LOGS                   = "${NOMAD_ALLOC_DIR}/logs/grafana"
        GF_PATHS_PLUGINS                = "${NOMAD_ALLOC_DIR}/data/grafana/plugins"
        GF_PATHS_PROVISIONING           = "${NOMAD_TASK_DIR}/provisioning"
        GF_SECURITY_ADMIN_USER          = var.admin_user
        GF_ANALYTICS_REPORTING_ENABLED  = "false"
        GF_ANALYTICS_CHECK_FOR_UPDATES  = "false"
        GF_USERS_ALLOW_SIGN_UP          = "false"
        GF_LOG_MODE                     = "console"
        PROMETHEUS_URL                  = var.prometheus_url != "" ? var.prometheus_url : "http://${meta.node_address}:9999/prometheus"
        PROMETHEUS_SCRAPE_INTERVAL      = var.scrape_interval
        GRAFANA_DASHBOARDS_DIR          = "${NOMAD_TASK_DIR}/dashboards"
      }

      template {
        data            = var.datasources_yml
        destination     = "local/provisioning/datasources/platform.yml"
        left_delimiter  = local.ldelim
        right_delimiter = local.rdelim
        uid             = local.file_uid
        change_mode     = "restart"
      }

      template {
        data            = var.dashboards_yml
        destination     = "local/provisioning/dashboards/platform.yml"
        left_delimiter  = local.ldelim
        right_delimiter = local.rdelim
        uid             = local.file_uid
        change_mode     = "restart"
      }

      # Grafana rereads the dashboards directory on its own (the provider's
      # updateIntervalSeconds).
      dynamic "template" {
        for_each = var.dashboards
        content {
          data            = template.value
          destination     = "local/dashboards/${template.key}"
          left_delimiter  = local.ldelim
          right_delimiter = local.rdelim
          uid             = local.file_uid
          change_mode     = "noop"
        }
      }

      dynamic "vault" {
        for_each = var.use_vault ? [1] : []
        content {
          role = var.vault_role
        }
      }

      dynamic "template" {
        for_each = var.use_vault ? [1] : []
        content {
          data        = <<-EOT
            GF_SECURITY_ADMIN_PASSWORD={{ with secret "secret/data/general/grafana/admin" }}{{ .Data.data.password }}{{ end }}
          EOT
          destination = "secrets/grafana.env"
          env         = true
          perms       = "0400"
          change_mode = "restart"
        }
      }

      resources {
        cpu    = var.cpu
        memory = var.memory
      }
    }
  }
}
