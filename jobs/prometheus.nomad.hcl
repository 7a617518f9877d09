# Prometheus and Alertmanager (the dissertation's section 5.2.4). Their
# configuration is rendered by the bootstrap binary (package monitoring) and
# passed in as variables; the template stanzas write it with delimiters
# consul-template never sees in it ({{ }} belong to Prometheus' alert
# annotations), so it arrives byte for byte.
#
# Variables:
#   datacenters          list(string)  datacenters to run in (default ["*"])
#   driver               string        "docker" (images, default), "raw_exec" or "exec" (binaries)
#   image, binary        string        Prometheus image (docker) / absolute path (raw_exec, exec)
#   count                number        Prometheus instances (default 1)
#   cpu, memory          number        MHz and MB for Prometheus (default 500, 1024)
#   prometheus_yml       string        prometheus.yml (monitoring.RenderPrometheus), required
#   rules                map(string)   alert rule files, name => content (monitoring.RenderRules)
#   ca_pems              map(string)   CA certificates, name => PEM, written to local/ca/<name>.pem
#                                      (prometheus.yml refers to them as ca/<name>.pem)
#   retention            string        TSDB retention (default "15d")
#   volume               string        docker: host volume holding the TSDB (default "prometheus-data";
#                                      the nomad role declares it on every client)
#   data_dir             string        raw_exec/exec: TSDB directory on the client; "" keeps it in
#                                      the allocation's sticky data dir
#   data_volume          bool          run only on clients whose host volumes live on a data
#                                      volume (node meta data_volume = "true"; default false)
#   route_prefix         string        path Prometheus serves under (default "/prometheus": its
#                                      Fabio route)
#   external_url         string        URL users reach Prometheus at (default: the node's Fabio,
#                                      http://<node_address>:9999/prometheus)
#   resend_delay         string        --rules.alert.resend-delay (default "1m")
#   use_vault            bool          read the Consul and Nomad tokens from Vault (default true)
#   vault_role           string        Vault JWT role for the workload identity ("" = default)
#   alertmanager_enabled bool          run the alertmanager group (default true)
#   alertmanager_image, alertmanager_binary, alertmanager_cpu, alertmanager_memory
#                                      the same for Alertmanager (default 100 MHz, 128 MB); the
#                                      binary default is Debian's package, which reads its
#                                      templates from /usr/share/prometheus/alertmanager and so
#                                      only runs where the package is installed: elsewhere use
#                                      an upstream build
#   alertmanager_yml     string        alertmanager.yml (monitoring.RenderAlertmanager), required
#
# Secrets: secret/data/general/prometheus/tokens holds "consul" (agent:read,
# node:read, service:read) and "nomad" (a Nomad token for /v1/metrics),
# written to secrets/consul.token and secrets/nomad.token. Vault is scraped
# with the task's own Vault token (secrets/vault_token, renewed by Nomad).

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
# jobs.TestImageDefaults keeps this default the same.
variable "image" {
  type    = string
  default = "prom/prometheus:v3.15.0"
}

variable "binary" {
  type    = string
  default = "/usr/local/bin/prometheus"
}

variable "count" {
  type    = number
  default = 1
}

variable "cpu" {
  type    = number
  default = 500
}

variable "memory" {
  type    = number
  default = 1024
}

variable "prometheus_yml" {
  type = string
}

variable "rules" {
  type    = map(string)
  default = {}
}

variable "ca_pems" {
  type    = map(string)
  default = {}
}

variable "retention" {
  type    = string
  default = "15d"
}

variable "volume" {
  type    = string
  default = "prometheus-data"
}

variable "data_dir" {
  type    = string
  default = ""
}

variable "data_volume" {
  type    = bool
  default = false
}

variable "route_prefix" {
  type    = string
  default = "/prometheus"
}

variable "external_url" {
  type    = string
  default = ""
}

variable "resend_delay" {
  type    = string
  default = "1m"
}

variable "use_vault" {
  type    = bool
  default = true
}

variable "vault_role" {
  type    = string
  default = ""
}

variable "alertmanager_enabled" {
  type    = bool
  default = true
}

# Named from tools/versions.env (jobs.Images, which the jobs stage passes);
# jobs.TestImageDefaults keeps this default the same.
variable "alertmanager_image" {
  type    = string
  default = "prom/alertmanager:v0.28.1"
}

variable "alertmanager_binary" {
  type    = string
  default = "/usr/bin/prometheus-alertmanager"
}

variable "alertmanager_cpu" {
  type    = number
  default = 100
}

variable "alertmanager_memory" {
  type    = number
  default = 128
}

variable "alertmanager_yml" {
  type = string
}

locals {
  docker = var.driver == "docker"
  # Files written by template stanzas must reach the process unchanged:
  # these delimiters never occur in what the monitoring package renders
  # (its tests check that).
  ldelim = "[[nomad-template-unused"
  rdelim = "nomad-template-unused]]"

  # The official images run as nobody; files they read must be theirs.
  file_uid = local.docker ? 65534 : -1

  data_path    = local.docker ? "/prometheus-data" : (var.data_dir != "" ? var.data_dir : "${NOMAD_ALLOC_DIR}/data/prometheus")
  external_url = var.external_url != "" ? var.external_url : "http://${meta.node_address}:9999${var.route_prefix}"
  args = [
    "--config.file=${NOMAD_TASK_DIR}/prometheus.yml",
    "--storage.tsdb.path=${local.data_path}",
    "--storage.tsdb.retention.time=${var.retention}",
    "--web.listen-address=${meta.node_address}:${NOMAD_PORT_http}",
    "--web.route-prefix=${var.route_prefix}",
    "--web.external-url=${local.external_url}",
    "--rules.alert.resend-delay=${var.resend_delay}",
  ]

  am_route_prefix = "/alertmanager"
  am_args = [
    "--config.file=${NOMAD_TASK_DIR}/alertmanager.yml",
    "--storage.path=${NOMAD_ALLOC_DIR}/data/alertmanager",
    "--web.listen-address=${meta.node_address}:${NOMAD_PORT_http}",
    "--web.route-prefix=${local.am_route_prefix}",
    "--web.external-url=http://${meta.node_address}:9999${local.am_route_prefix}",
    # Without an explicit empty address the gossip listener binds
    # 0.0.0.0:9094; a single Alertmanager needs no cluster.
    "--cluster.listen-address=",
  ]
}

job "prometheus" {
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

  group "prometheus" {
    count = var.count

    dynamic "constraint" {
      for_each = var.data_volume ? [1] : []
      content {
        attribute = "${meta.data_volume}"
        value     = "true"
      }
    }

    network {
      port "http" {}
    }

    # Keep the TSDB across allocation replacements on the same client.
    ephemeral_disk {
      sticky  = true
      migrate = true
      size    = 1024
    }

    dynamic "volume" {
      for_each = local.docker ? [var.volume] : []
      labels   = [volume.value]
      content {
        type   = "host"
        source = volume.value
      }
    }

    service {
      name     = "prometheus"
      port     = "http"
      address  = "${meta.node_address}"
      provider = "consul"
      tags     = ["prometheus", "urlprefix-${var.route_prefix}"]
      meta {
        metrics_path = "${var.route_prefix}/metrics"
      }

      check {
        name     = "ready"
        type     = "http"
        path     = "${var.route_prefix}/-/ready"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "prometheus" {
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

      dynamic "volume_mount" {
        for_each = local.docker ? [var.volume] : []
        content {
          volume      = volume_mount.value
          destination = "/prometheus-data"
        }
      }

      template {
        data            = var.prometheus_yml
        destination     = "local/prometheus.yml"
        left_delimiter  = local.ldelim
        right_delimiter = local.rdelim
        uid             = local.file_uid
        change_mode     = "signal"
        change_signal   = "SIGHUP"
      }

      dynamic "template" {
        for_each = var.rules
        content {
          data            = template.value
          destination     = "local/rules/${template.key}"
          left_delimiter  = local.ldelim
          right_delimiter = local.rdelim
          uid             = local.file_uid
          change_mode     = "signal"
          change_signal   = "SIGHUP"
        }
      }

      dynamic "template" {
        for_each = var.ca_pems
        content {
          data            = template.value
          destination     = "local/ca/${template.key}.pem"
          left_delimiter  = local.ldelim
          right_delimiter = local.rdelim
          uid             = local.file_uid
          change_mode     = "signal"
          change_signal   = "SIGHUP"
        }
      }

      dynamic "vault" {
        for_each = var.use_vault ? [1] : []
        content {
          role = var.vault_role
        }
      }

      dynamic "template" {
        for_each = var.use_vault ? { consul = "consul", nomad = "nomad" } : {}
        content {
          data          = "{{ with secret \"secret/data/general/prometheus/tokens\" }}{{ index .Data.data \"${template.value}\" }}{{ end }}"
          destination   = "secrets/${template.key}.token"
          perms         = "0400"
          uid           = local.file_uid
          change_mode   = "signal"
          change_signal = "SIGHUP"
        }
      }

      resources {
        cpu    = var.cpu
        memory = var.memory
      }
    }
  }

  # Only when enabled: a disabled Alertmanager leaves no group behind
  # (Nomad stops its allocation), and Prometheus finds no instance of the
  # Consul service "alertmanager" to send alerts to.
  dynamic "group" {
    for_each = var.alertmanager_enabled ? ["alertmanager"] : []
    labels   = [group.value]
    content {
      network {
        port "http" {}
      }

      service {
        name     = "alertmanager"
        port     = "http"
        address  = "${meta.node_address}"
        provider = "consul"
        tags     = ["prometheus", "urlprefix-${local.am_route_prefix}"]
        meta {
          metrics_path = "${local.am_route_prefix}/metrics"
        }

        check {
          name     = "ready"
          type     = "http"
          path     = "${local.am_route_prefix}/-/ready"
          interval = "10s"
          timeout  = "3s"
        }
      }

      task "alertmanager" {
        driver = var.driver

        dynamic "config" {
          for_each = local.docker ? [1] : []
          content {
            image        = var.alertmanager_image
            args         = local.am_args
            network_mode = "host"
          }
        }

        dynamic "config" {
          for_each = local.docker ? [] : [1]
          content {
            command = var.alertmanager_binary
            args    = local.am_args
          }
        }

        template {
          data            = var.alertmanager_yml
          destination     = "local/alertmanager.yml"
          left_delimiter  = local.ldelim
          right_delimiter = local.rdelim
          uid             = local.file_uid
          change_mode     = "signal"
          change_signal   = "SIGHUP"
        }

        resources {
          cpu    = var.alertmanager_cpu
          memory = var.alertmanager_memory
        }
      }
    }
  }
}
