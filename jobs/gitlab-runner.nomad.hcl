# GitLab Runner (the dissertation's section 5.2.3): runs the CI jobs of the
# GitLab projects that deploy to the dev/prod namespaces. Submitted only
# when platform.hcl has a gitlab_runner block.
#
# Variables:
#   datacenters     list(string)  datacenters to run in (default ["*"])
#   driver          string        "docker" (image, default), "raw_exec" or "exec" (binary)
#   image, binary   string        gitlab-runner image (docker) / absolute path (raw_exec, exec)
#   count           number        runner instances (default 1)
#   cpu, memory     number        MHz and MB reserved (default 500, 512)
#   gitlab_url      string        GitLab instance, e.g. https://gitlab.example.com (required)
#   executor        string        "docker" (CI jobs in containers of the client's Docker engine,
#                                 default) or "shell" (CI jobs as processes of the runner's task)
#   job_image       string        default image of CI jobs with the docker executor
#   concurrent      number        CI jobs one runner runs at once (default 1)
#   vault_role      string        Vault JWT role for the workload identity ("" = default)
#
# Secrets: the runner authentication token (glrt-..., created in GitLab
# under CI/CD > Runners; its tags are set there) is read from Vault at
# secret/data/general/gitlab-runner/token, field "token", straight into
# config.toml in the task's secrets directory. GitLab Runner has no Nomad
# executor of its own: CI jobs deploy to Nomad with the nomad CLI and the
# NOMAD_ADDR/NOMAD_TOKEN CI variables (the dissertation's listing 5.7).

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
  default = "gitlab/gitlab-runner:alpine-v17.11.3"
}

variable "binary" {
  type    = string
  default = "/usr/bin/gitlab-runner"
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
  default = 512
}

variable "gitlab_url" {
  type = string
  validation {
    condition     = var.gitlab_url != "" && regex_replace(var.gitlab_url, "^https?://[^/]+.*$", "") == ""
    error_message = "The gitlab_url must be an http(s) URL, e.g. https://gitlab.example.com."
  }
}

variable "executor" {
  type    = string
  default = "docker"
  validation {
    condition     = contains(["docker", "shell"], var.executor)
    error_message = "The executor must be docker or shell."
  }
}

variable "job_image" {
  type    = string
  default = "alpine:3.20"
}

variable "concurrent" {
  type    = number
  default = 1
}

variable "vault_role" {
  type    = string
  default = ""
}

locals {
  docker = var.driver == "docker"
  args = [
    "run",
    "--config", "${NOMAD_SECRETS_DIR}/config.toml",
    "--working-directory", "${NOMAD_ALLOC_DIR}/data/builds",
  ]
  # consul-template renders this (Nomad does not interpolate ${...} in
  # template data: node meta is meta.<key> to consul-template); the token
  # goes in as a TOML string.
  config_toml = <<-EOT
    concurrent = ${var.concurrent}
    check_interval = 3
    shutdown_timeout = 30
    listen_address = "{{ env "meta.node_address" }}:{{ env "NOMAD_PORT_metrics" }}"

    [[runners]]
      name = "nomad-{{ env "node.unique.name" }}-{{ env "NOMAD_ALLOC_INDEX" }}"
      url = "${var.gitlab_url}"
      token = {{ with secret "secret/data/general/gitlab-runner/token" }}{{ .Data.data.token | toJSON }}{{ end }}
      executor = "${var.executor}"
      builds_dir = "{{ env "NOMAD_ALLOC_DIR" }}/data/builds"
      cache_dir = "{{ env "NOMAD_ALLOC_DIR" }}/data/cache"
    %{if var.executor == "docker"}
      [runners.docker]
        image = "${var.job_image}"
        privileged = false
        volumes = ["/cache"]
    %{endif}
  EOT
}

job "gitlab-runner" {
  namespace   = "general"
  datacenters = var.datacenters
  type        = "service"

  group "gitlab-runner" {
    count = var.count

    # The docker executor starts the CI jobs' containers next to the
    # runner, on the client's engine: its socket is a host volume (the
    # clients refuse bind mounts in jobs).
    dynamic "volume" {
      for_each = local.docker && var.executor == "docker" ? ["docker-socket"] : []
      labels   = [volume.value]
      content {
        type   = "host"
        source = volume.value
      }
    }

    network {
      port "metrics" {}
    }

    # The runner's Prometheus endpoint (listen_address) answers /metrics.
    service {
      name     = "gitlab-runner"
      port     = "metrics"
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

    task "gitlab-runner" {
      driver = var.driver

      dynamic "config" {
        for_each = local.docker ? [1] : []
        content {
          image        = var.image
          args         = local.args
          network_mode = "host"
        }
      }

      dynamic "volume_mount" {
        for_each = local.docker && var.executor == "docker" ? ["docker-socket"] : []
        content {
          volume      = volume_mount.value
          destination = "/var/run/docker.sock"
        }
      }

      dynamic "config" {
        for_each = local.docker ? [] : [1]
        content {
          command = var.binary
          args    = local.args
        }
      }

      vault {
        role = var.vault_role
      }

      template {
        data        = local.config_toml
        destination = "secrets/config.toml"
        perms       = "0400"
        change_mode = "restart"
      }

      resources {
        cpu    = var.cpu
        memory = var.memory
      }
    }
  }
}
