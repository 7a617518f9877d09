# The example application's Nomad job, deployed by the pipeline of
# .gitlab-ci.yml next to it (ci/gitlab/deploy.gitlab-ci.yml) with
# `bootstrap deploy`.
#
# ${CI_REGISTRY_IMAGE} and ${CI_COMMIT_SHORT_SHA} are replaced from the CI
# job's environment before the job is parsed, like envsubst in the
# dissertation's pipeline: the image is the one the build stage pushed for
# this commit. var.namespace is passed by the template
# (--var namespace=<the GitLab environment>: dev or prod).

variable "namespace" {
  type        = string
  description = "dev or prod: the pipeline passes the GitLab environment's name"
}

variable "count" {
  type    = number
  default = 1
}

job "web" {
  namespace   = var.namespace
  datacenters = ["*"]
  type        = "service"

  # One canary at a time, promoted once healthy: a broken version never
  # replaces the running one. bootstrap deploy reverts a failed deployment
  # itself, after printing why it failed, so Nomad's auto_revert stays off.
  update {
    max_parallel      = 1
    canary            = 1
    auto_promote      = true
    auto_revert       = false
    min_healthy_time  = "10s"
    healthy_deadline  = "2m"
    progress_deadline = "5m"
  }

  group "web" {
    count = var.count

    network {
      port "http" {
        to = 8080
      }
    }

    service {
      # A namespace's services are named "<namespace>-…": Consul gives a
      # job in dev no other names, so dev-web can never pass for prod's
      # service or the platform's.
      name = "${var.namespace}-web"
      port = "http"
      # prometheus: scraped by the platform's Prometheus at /metrics.
      # urlprefix-/web: routed at /web (which it strips) by the namespace's
      # own Fabio (`bootstrap up` prints its address as "Apps (dev)").
      tags = ["prometheus", "urlprefix-/web strip=/web"]

      check {
        name     = "alive"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "web" {
      driver = "docker"

      config {
        image = "${CI_REGISTRY_IMAGE}:${CI_COMMIT_SHORT_SHA}"
        ports = ["http"]
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
