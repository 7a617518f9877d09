# Fabio: the HTTP load balancer in front of every Consul service tagged
# "urlprefix-/path" (the dissertation's section 5.2.3). A system job: one
# instance per client, listening on the client's meta.node_address.
#
# One Fabio per trust domain: group "fabio" routes the platform's services
# (its Consul token cannot see the application namespaces' services), and
# each application namespace gets a group "fabio-<namespace>" on a port of
# its own whose token sees only "<namespace>-…" services. Consul decides
# which names a namespace may register, so no application can take a
# platform route or another namespace's.
#
# Variables:
#   datacenters     list(string)  datacenters to run in (default ["*"])
#   driver          string        "docker" (image, default), "raw_exec" or "exec" (binary)
#   image           string        container image for the docker driver
#   binary          string        absolute path of fabio on the clients (raw_exec/exec)
#   cpu, memory     number        MHz and MB reserved (default 200, 128)
#   proxy_port      number        static HTTP proxy port (default 9999)
#   ui_port         number        static UI/API port (default 9998)
#   app_listeners   list(object({namespace=string, port=number, public_port=number, tls_port=number}))
#                                 one Fabio per application namespace, the static port it
#                                 proxies on, and the port it also serves on the client's
#                                 public address (0: none); with tls_port (0: none) it
#                                 serves HTTPS there instead, and public_port redirects to
#                                 it (default [])
#   public          bool          the platform's Fabio also proxies on the client's public
#                                 address, on proxy_port (default false)
#   consul_addr     string        Consul HTTP API, scheme://host:port, reached from the
#                                 client (default https://<node_address>:8501: the
#                                 client's own Consul agent)
#   consul_ca_pem   string        PEM of the CA that signed Consul's HTTPS certificate
#                                 (empty: the system roots; unused over http)
#   use_vault       bool          read the Consul token from Vault (default true); false
#                                 only for clusters without Consul ACLs
#   vault_role      string        Vault JWT role for the task's workload identity ("" = default)
#
# Public addresses: a client whose node meta public_address is set (the
# inventory's public_ip) gets the public listeners; other clients do not.
# Nomad does not know the public address (it fingerprints one network), so
# it does not reserve those ports: nothing else on the platform binds there.
#
# Secrets: the Consul ACL tokens are read from Vault at
# secret/data/general/fabio/consul (the platform's Fabio) and
# secret/data/general/fabio/consul-<namespace>, field "token", and handed to
# Fabio in its environment, never in the job. An HTTPS listener's
# certificate and key are read from secret/data/general/fabio/tls-<namespace>
# (fields "cert" and "key") into the task's secrets directory.
#
# The redirect from HTTP to HTTPS is a second Fabio in the group, whose only
# route (static, no Consul) answers every request with a 301 to the same
# host and path over HTTPS: Fabio's routes apply to all of one instance's
# listeners, so the HTTPS Fabio itself cannot redirect its HTTP port alone.

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
  default = "fabiolb/fabio:1.6.3"
}

variable "binary" {
  type    = string
  default = "/usr/local/bin/fabio"
}

variable "cpu" {
  type    = number
  default = 200
}

variable "memory" {
  type    = number
  default = 128
}

variable "proxy_port" {
  type    = number
  default = 9999
}

variable "ui_port" {
  type    = number
  default = 9998
}

variable "app_listeners" {
  type    = list(object({ namespace = string, port = number, public_port = number, tls_port = number }))
  default = []
}

variable "public" {
  type    = bool
  default = false
}

variable "consul_addr" {
  type    = string
  default = ""
}

variable "consul_ca_pem" {
  type    = string
  default = ""
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
  # Nomad does not interpolate ${...} in template data: the node's address
  # comes from consul-template, which sees node meta as meta.<key>.
  node_address = "{{ env \"meta.node_address\" }}"
  consul_addr  = var.consul_addr != "" ? var.consul_addr : "https://${local.node_address}:8501"
  # Fabio reads every property from FABIO_<name with _ for .> as well; the
  # properties file holds what is not secret.
  listeners = concat(
    [{ name = "fabio", port = var.proxy_port, ui_port = var.ui_port, public_port = var.public ? var.proxy_port : 0, tls_port = 0, secret = "secret/data/general/fabio/consul", tls_secret = "" }],
    [for l in var.app_listeners : { name = "fabio-${l.namespace}", port = l.port, ui_port = 0, public_port = l.public_port, tls_port = l.tls_port, secret = "secret/data/general/fabio/consul-${l.namespace}", tls_secret = "secret/data/general/fabio/tls-${l.namespace}" }],
  )
  # Written per group: the public listener exists only on clients with a
  # public address, and only for the listeners that have a public port.
  public_addr = "{{ with env \"meta.public_address\" }},{{ . }}:%d;proto=http{{ end }}"
  tls_addr    = "{{ with env \"meta.public_address\" }},{{ . }}:%d;proto=https;cs=ingress;tlsmin=tls12{{ end }}"
  # The redirect keeps the host and path; fabio drops the / before $path.
  redirect_properties = <<-EOT
    proxy.addr = ${local.node_address}:{{ env "NOMAD_PORT_redirect" }};proto=http{{ with env "meta.public_address" }},{{ . }}:[[public_port]];proto=http{{ end }}
    ui.addr = ${local.node_address}:{{ env "NOMAD_PORT_redirect_ui" }}
    ui.access = ro
    registry.backend = static
    registry.static.routes = route add https / https://$host[[tls_port]]/$path opts "redirect=301"
    metrics.target =
    log.access.target =
  EOT
  properties  = <<-EOT
    proxy.addr = ${local.node_address}:{{ env "NOMAD_PORT_proxy" }};proto=http,${local.node_address}:{{ env "NOMAD_PORT_metrics" }};proto=prometheus[[public]]
    ui.addr = ${local.node_address}:{{ env "NOMAD_PORT_ui" }}
    ui.access = ro
    registry.backend = consul
    registry.consul.addr = ${local.consul_addr}
    %{if var.consul_ca_pem != ""}registry.consul.tls.cafile = {{ env "NOMAD_TASK_DIR" }}/consul-ca.pem%{endif}
    [[tls]]
    # Nomad registers the service with its checks; Fabio must not.
    registry.consul.register.enabled = false
    registry.consul.service.status = passing
    metrics.target = prometheus
    # The default prefix is the host's name: on a machine named client-1 the
    # metric names are invalid and Fabio panics at start. Prometheus labels
    # the targets' instances anyway.
    metrics.prefix = fabio
    metrics.prometheus.subsystem = fabio
    log.access.target =
  EOT
}

job "fabio" {
  namespace   = "general"
  datacenters = var.datacenters
  type        = "system"

  dynamic "group" {
    for_each = local.listeners
    labels   = [group.value.name]
    content {
      network {
        port "proxy" {
          static = group.value.port
        }
        # The platform's Fabio UI has a fixed port; the others' are dynamic.
        dynamic "port" {
          for_each = group.value.ui_port > 0 ? [group.value.ui_port] : []
          labels   = ["ui"]
          content {
            static = port.value
          }
        }
        dynamic "port" {
          for_each = group.value.ui_port > 0 ? [] : [1]
          labels   = ["ui"]
          content {}
        }
        port "metrics" {}
        dynamic "port" {
          for_each = group.value.tls_port > 0 ? ["redirect", "redirect_ui"] : []
          labels   = [port.value]
          content {}
        }
      }

      service {
        name     = group.value.name
        port     = "ui"
        address  = "${meta.node_address}"
        provider = "consul"

        check {
          name     = "health"
          type     = "http"
          path     = "/health"
          interval = "10s"
          timeout  = "3s"
        }
      }

      # Fabio's Prometheus listener is separate from the UI.
      service {
        name     = "fabio-metrics"
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

      task "fabio" {
        driver = var.driver

        dynamic "config" {
          for_each = local.docker ? [1] : []
          content {
            image        = var.image
            args         = ["-cfg", "/local/fabio.properties"]
            network_mode = "host"
          }
        }

        dynamic "config" {
          for_each = local.docker ? [] : [1]
          content {
            command = var.binary
            args    = ["-cfg", "${NOMAD_TASK_DIR}/fabio.properties"]
          }
        }

        template {
          data = replace(replace(local.properties, "[[public]]",
            group.value.tls_port > 0 ? format(local.tls_addr, group.value.tls_port) :
            group.value.public_port > 0 ? format(local.public_addr, group.value.public_port) : ""),
            "[[tls]]", group.value.tls_port > 0 ? "proxy.cs = cs=ingress;type=path;cert={{ env \"NOMAD_SECRETS_DIR\" }}/tls;refresh=1m" : "")
          destination = "local/fabio.properties"
          change_mode = "restart"
        }

        # Fabio's path source reads the pair again when it changes.
        dynamic "template" {
          for_each = group.value.tls_port > 0 ? ["cert", "key"] : []
          content {
            data        = "{{ with secret \"${group.value.tls_secret}\" }}{{ .Data.data.${template.value} }}{{ end }}"
            destination = "secrets/tls/ingress-${template.value}.pem"
            perms       = "0600"
            change_mode = "noop"
          }
        }

        dynamic "template" {
          for_each = var.consul_ca_pem != "" ? [1] : []
          content {
            data            = var.consul_ca_pem
            destination     = "local/consul-ca.pem"
            change_mode     = "restart"
            left_delimiter  = "[[nomad-template-unused"
            right_delimiter = "nomad-template-unused]]"
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
            FABIO_registry_consul_token={{ with secret "${group.value.secret}" }}{{ .Data.data.token }}{{ end }}
          EOT
            destination = "secrets/fabio.env"
            env         = true
            change_mode = "restart"
          }
        }

        resources {
          cpu    = var.cpu
          memory = var.memory
        }
      }

      dynamic "task" {
        for_each = group.value.tls_port > 0 ? [1] : []
        labels   = ["redirect"]
        content {
          driver = var.driver

          dynamic "config" {
            for_each = local.docker ? [1] : []
            content {
              image        = var.image
              args         = ["-cfg", "/local/redirect.properties"]
              network_mode = "host"
            }
          }

          dynamic "config" {
            for_each = local.docker ? [] : [1]
            content {
              command = var.binary
              args    = ["-cfg", "${NOMAD_TASK_DIR}/redirect.properties"]
            }
          }

          template {
            data        = replace(replace(local.redirect_properties, "[[public_port]]", group.value.public_port), "[[tls_port]]", group.value.tls_port == 443 ? "" : ":${group.value.tls_port}")
            destination = "local/redirect.properties"
            change_mode = "restart"
          }

          resources {
            cpu    = 50
            memory = 64
          }
        }
      }
    }
  }
}
