# node-exporter: CPU, memory, disk and network of every Nomad client, for
# Prometheus (requirement 4.1.2.1). A system job: one instance per client.
#
# Variables:
#   datacenters  list(string)  datacenters to run in (default ["*"])
#   driver       string        "docker" (image, default), "raw_exec" or "exec" (binary)
#   image        string        container image for the docker driver
#   binary       string        absolute path of node_exporter on the clients (raw_exec/exec)
#   cpu          number        MHz reserved (default 100)
#   memory       number        MB reserved (default 64)
#   port         number        static port, bound on the node's meta.node_address (default 9100)
#
# Every client carries node meta node_address (its own IP); node-exporter
# listens there and registers that address in Consul, tagged "prometheus",
# so Prometheus' consul_sd_metrics job scrapes it.

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
  default = "quay.io/prometheus/node-exporter:v1.5.0"
}

variable "binary" {
  type    = string
  default = "/usr/bin/prometheus-node-exporter"
}

variable "cpu" {
  type    = number
  default = 100
}

variable "memory" {
  type    = number
  default = 64
}

variable "port" {
  type    = number
  default = 9100
}

locals {
  docker = var.driver == "docker"
  args = concat(
    [
      "--web.listen-address=${meta.node_address}:${var.port}",
      # There is no systemd D-Bus to talk to in a container, nor on the
      # local provider.
      "--no-collector.systemd",
    ],
    local.docker ? ["--path.rootfs=/host"] : [],
  )
}

job "node-exporter" {
  namespace   = "general"
  datacenters = var.datacenters
  type        = "system"

  group "node-exporter" {
    # Docker: the host's root, read-only, through the clients' host volume
    # (the clients refuse bind mounts in the job, and only the management
    # token may mount a host volume).
    dynamic "volume" {
      for_each = local.docker ? ["host-root"] : []
      labels   = [volume.value]
      content {
        type      = "host"
        source    = volume.value
        read_only = true
      }
    }

    network {
      port "http" {
        static = var.port
      }
    }

    service {
      name     = "node-exporter"
      port     = "http"
      address  = "${meta.node_address}"
      provider = "consul"
      tags     = ["prometheus"]

      check {
        name     = "metrics"
        type     = "http"
        path     = "/metrics"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "node-exporter" {
      driver = var.driver

      dynamic "config" {
        for_each = local.docker ? [1] : []
        content {
          image        = var.image
          args         = local.args
          network_mode = "host"
          pid_mode     = "host"
        }
      }

      dynamic "volume_mount" {
        for_each = local.docker ? ["host-root"] : []
        content {
          volume           = volume_mount.value
          destination      = "/host"
          read_only        = true
          propagation_mode = "host-to-task"
        }
      }

      dynamic "config" {
        for_each = local.docker ? [] : [1]
        content {
          command = var.binary
          args    = local.args
        }
      }

      resources {
        cpu    = var.cpu
        memory = var.memory
      }
    }
  }
}
