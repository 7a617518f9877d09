package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
)

// consulConfig is ansible/roles/consul/templates/consul.hcl.j2 for node n
// with the local provider's settings (service_manager = "process").
func (p *platform) consulConfig(n inventory.Node, gossip string) string {
	cfg := p.e.Config
	server := n.Has(inventory.RoleServer)
	var join []string
	for _, s := range p.inv.WithRole(inventory.RoleServer) {
		join = append(join, s.PrivateIP)
	}
	joinJSON, _ := json.Marshal(join)
	gossipJSON, _ := json.Marshal(gossip)
	tls := path(n, "tls", "consul")
	var b strings.Builder
	fmt.Fprintf(&b, `datacenter     = %q
domain         = %q
node_name      = %q
data_dir       = %q
bind_addr      = %q
advertise_addr = %q
client_addr    = %q
server         = %v
`, cfg.Datacenter, cfg.Consul.Domain, n.Name, path(n, "data", "consul"), n.PrivateIP, n.PrivateIP, n.PrivateIP, server)
	if server {
		fmt.Fprintf(&b, "bootstrap_expect = %d\n", len(p.inv.WithRole(inventory.RoleServer)))
	}
	fmt.Fprintf(&b, `retry_join = %s
retry_interval = "2s"
encrypt                 = %s
encrypt_verify_incoming = true
encrypt_verify_outgoing = true
log_level               = "INFO"
performance {
  raft_multiplier = 1
}
disable_update_check    = true

ports {
  http     = -1
  https    = 8501
  grpc     = -1
  grpc_tls = 8503
  dns      = 8600
}

tls {
  defaults {
    ca_file         = "%[3]s/ca.pem"
    cert_file       = "%[3]s/cert.pem"
    key_file        = "%[3]s/key.pem"
    verify_incoming = true
    verify_outgoing = true
    tls_min_version = "TLSv1_2"
  }
  internal_rpc {
    verify_server_hostname = true
  }
  https {
    verify_incoming = false
  }
  grpc {
    verify_incoming = false
  }
}
`, joinJSON, gossipJSON, tls)
	if server {
		b.WriteString("\nauto_encrypt {\n  allow_tls = true\n}\n")
	}
	fmt.Fprintf(&b, `
acl {
  enabled                  = true
  default_policy           = "deny"
  down_policy              = "extend-cache"
  enable_token_persistence = true
}

ui_config {
  enabled = %v
}

connect {
  enabled = true
}

telemetry {
  prometheus_retention_time = "60s"
  disable_hostname          = true
}
`, server && cfg.Consul.UI)
	return b.String()
}

// chrootEnv is nomad_chroot_env of the nomad role's defaults.
var chrootEnv = []string{"/bin", "/sbin", "/lib64", "/lib/x86_64-linux-gnu", "/usr/bin", "/usr/sbin",
	"/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/etc/ssl/certs", "/usr/share/ca-certificates",
	"/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/resolv.conf", "/etc/ld.so.cache", "/etc/localtime"}

// hostVolumes is nomad_host_volumes of the nomad role's defaults.
var hostVolumes = []string{"prometheus-data", "grafana-data", "alertmanager-data"}

// nomadConfig is ansible/roles/nomad/templates/nomad.hcl.j2 for node n with
// the local provider's settings (process, raw_exec, no Docker).
func (p *platform) nomadConfig(n inventory.Node, gossip, consulToken string) string {
	cfg := p.e.Config
	servers := p.inv.WithRole(inventory.RoleServer)
	list := func(port string) string {
		var out []string
		for _, s := range servers {
			out = append(out, s.PrivateIP+":"+port)
		}
		b, _ := json.Marshal(out)
		return string(b)
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	var b strings.Builder
	fmt.Fprintf(&b, `name       = %q
region     = %q
datacenter = %q
data_dir   = %q
bind_addr  = %q
log_level  = "INFO"
disable_update_check = true

advertise {
  http = %[5]q
  rpc  = %[5]q
  serf = %[5]q
}
`, n.Name, cfg.Region, cfg.Datacenter, path(n, "data", "nomad"), n.PrivateIP)
	if n.Has(inventory.RoleServer) {
		fmt.Fprintf(&b, `
server {
  enabled          = true
  bootstrap_expect = %d
  encrypt          = %s
  server_join {
    retry_join = %s
    retry_interval = "2s"
  }
}
`, len(servers), q(gossip), list("4648"))
	}
	if n.Has(inventory.RoleClient) {
		fmt.Fprintf(&b, `
client {
  enabled = true
  servers = %s
  network_interface = "lo"
  min_dynamic_port  = %d
  max_dynamic_port  = %d
  meta {
    node_address = %q
  }
  options {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
    "user.denylist"        = "root,nomad,consul,vault"
    "user.checked_drivers" = "exec,java"
  }
  chroot_env {
`, list("4647"), n.Local.MinDynamicPort, n.Local.MaxDynamicPort, n.PrivateIP)
		for _, src := range chrootEnv {
			fmt.Fprintf(&b, "    %s = %s\n", q(src), q(src))
		}
		b.WriteString("  }\n")
		for _, v := range hostVolumes {
			fmt.Fprintf(&b, "  host_volume %q {\n    path      = %q\n    read_only = false\n  }\n", v, path(n, "data", "nomad", "volumes", v))
		}
		b.WriteString("}\n\nplugin \"raw_exec\" {\n  config {\n    enabled = true\n  }\n}\n")
	}
	tls := path(n, "tls", "nomad")
	fmt.Fprintf(&b, `
tls {
  http                   = true
  rpc                    = true
  ca_file                = "%[1]s/ca.pem"
  cert_file              = "%[1]s/cert.pem"
  key_file               = "%[1]s/key.pem"
  verify_server_hostname = true
  verify_https_client    = false
}

acl {
  enabled = true
}

consul {
  address      = "%[2]s:8501"
  ssl          = true
  verify_ssl   = true
  ca_file      = %[3]q
  grpc_address = "%[2]s:8503"
  grpc_ca_file = %[3]q
  token        = %[4]s
`, tls, n.PrivateIP, path(n, "tls", "consul", "ca.pem"), q(consulToken))
	if n.Has(inventory.RoleServer) {
		b.WriteString("  service_identity {\n    aud = [\"consul.io\"]\n    ttl = \"1h\"\n  }\n")
	}
	fmt.Fprintf(&b, `}

vault {
  enabled               = true
  address               = %s
  ca_file               = %q
  jwt_auth_backend_path = "jwt-nomad"
`, q(p.vaultAddr), path(n, "config", "consul-template", "vault-ca.pem"))
	if n.Has(inventory.RoleServer) {
		b.WriteString("  default_identity {\n    aud = [\"vault.io\"]\n    ttl = \"1h\"\n  }\n")
	}
	b.WriteString(`}

telemetry {
  collection_interval        = "10s"
  prometheus_metrics         = true
  publish_allocation_metrics = true
  publish_node_metrics       = true
  disable_hostname           = true
}

ui {
  enabled = true
}
`)
	return b.String()
}

// startAgents writes each node's configuration of product and starts every
// agent at once.
func (p *platform) startAgents(product string, nodes []inventory.Node, config func(inventory.Node) string) error {
	for _, n := range nodes {
		file := path(n, "config", product+".d", product+".hcl")
		if err := writeFile(file, config(n), 0o600); err != nil {
			return err
		}
		if err := os.MkdirAll(path(n, "data", product), 0o700); err != nil {
			return err
		}
		if product == "nomad" && n.Has(inventory.RoleClient) {
			for _, v := range hostVolumes {
				dir := path(n, "data", "nomad", "volumes", v)
				if err := os.MkdirAll(dir, 0o777); err != nil {
					return err
				}
				if err := os.Chmod(dir, 0o777); err != nil {
					return err
				}
			}
		}
		flag := "-config-dir="
		if product == "nomad" {
			flag = "-config="
		}
		if err := p.ps.start(n.Local.Root, path(n, "logs", product+".log"), p.bin+"/"+product, "agent", flag+path(n, "config", product+".d")); err != nil {
			return err
		}
	}
	return nil
}

// waitLeader waits until the agent of every node of nodes answers and names
// a leader.
func (p *platform) waitLeader(ctx context.Context, nodes []inventory.Node, leader func(context.Context, inventory.Node) (string, error)) error {
	return poll(ctx, 100*time.Millisecond, func() error {
		var errs []error
		for _, n := range nodes {
			l, err := leader(ctx, n)
			if err == nil && l == "" {
				err = errors.New("no leader")
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
			}
		}
		return errors.Join(errs...)
	})
}

// poll calls f every interval until it succeeds or ctx ends, and returns
// f's last error then.
func poll(ctx context.Context, interval time.Duration, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

func readFile(name string) (string, error) {
	b, err := os.ReadFile(name)
	return string(b), err
}
