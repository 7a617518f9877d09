package jobs

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	"github.com/platform-bootstrap/bootstrap/pki"
)

// env is a small real platform: Consul with ACLs, a dev Vault with Nomad's
// workload identities wired the way the pki and nomad stages do it (JWT
// auth, the nomad-workloads policy), and a Nomad agent in dev mode (server
// and raw_exec client) using both.
type env struct {
	consul *testcluster.Consul
	vault  *testcluster.Vault
	nomad  *nomadapi.Client
	// ip is the Nomad agent's address, its node meta node_address.
	ip       string
	nomadDir string
}

func startEnv(t *testing.T) *env {
	t.Helper()
	e := &env{}
	e.consul = testcluster.StartConsul(t, testcluster.ConsulOptions{Servers: 1, ACL: true})
	e.vault = testcluster.StartVault(t)
	e.ip = e.consul.Subnet.IP(2)
	e.nomadDir = t.TempDir()
	cfg := filepath.Join(e.nomadDir, "agent.hcl")
	writeFile(t, cfg, fmt.Sprintf(`name = "dev"
bind_addr = %[1]q
data_dir = %[2]q
disable_update_check = true
client {
  network_interface = "lo"
  options {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
  meta {
    node_address = %[1]q
  }
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
consul {
  address = %[3]q
  token = %[4]q
}
vault {
  enabled = true
  address = %[5]q
  ca_file = %[6]q
  jwt_auth_backend_path = %[7]q
  create_from_role = %[8]q
  default_identity {
    aud = ["vault.io"]
    ttl = "1h"
  }
}
telemetry {
  prometheus_metrics = true
  publish_allocation_metrics = true
  publish_node_metrics = true
  disable_hostname = true
  collection_interval = "2s"
}
`, e.ip, filepath.Join(e.nomadDir, "data"), strings.TrimPrefix(e.consul.HTTPAddrs[0], "http://"), e.consul.Token,
		e.vault.Addr, e.vault.CACert, pki.JWTNomadPath, pki.PolicyNomadWorkloads))
	p := testcluster.Start(t, "nomad-dev", testcluster.Bin(t, "nomad"), []string{"agent", "-dev", "-config=" + cfg}, e.nomadDir)
	p.Redact(e.consul.Token, e.vault.Token)
	conf := nomadapi.DefaultConfig()
	conf.Address = "http://" + e.ip + ":4646"
	c, err := nomadapi.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	e.nomad = c
	waitUntil(t, 90*time.Second, "a ready Nomad client with Consul and Vault", func() error {
		nodes, _, err := c.Nodes().List(nil)
		if err != nil {
			return err
		}
		if len(nodes) != 1 || nodes[0].Status != "ready" {
			return fmt.Errorf("%d nodes", len(nodes))
		}
		n, _, err := c.Nodes().Info(nodes[0].ID, nil)
		if err != nil {
			return err
		}
		for _, a := range []string{"consul.version", "vault.version.default"} {
			if n.Attributes[a] == "" && n.Attributes[strings.TrimSuffix(a, ".default")] == "" {
				return fmt.Errorf("no %s attribute yet", a)
			}
		}
		return nil
	})
	if _, err := c.Namespaces().Register(&nomadapi.Namespace{Name: Namespace}, nil); err != nil {
		t.Fatal(err)
	}
	e.configureVault(t)
	return e
}

// configureVault sets up Vault as the pki and nomad stages do: JWT auth
// trusting Nomad's workload identities, the nomad-workloads policy, and the
// secrets the platform jobs read.
func (e *env) configureVault(t *testing.T) {
	t.Helper()
	v := e.vault.Client
	if err := v.Sys().EnableAuthWithOptions(pki.JWTNomadPath, &vaultapi.EnableAuthOptions{Type: "jwt"}); err != nil {
		t.Fatal(err)
	}
	auths, err := v.Sys().ListAuth()
	if err != nil {
		t.Fatal(err)
	}
	accessor := auths[pki.JWTNomadPath+"/"].Accessor
	if err := v.Sys().PutPolicy(pki.PolicyNomadWorkloads, pki.NomadWorkloadsPolicy(accessor)); err != nil {
		t.Fatal(err)
	}
	write := func(path string, data map[string]any) {
		t.Helper()
		if _, err := v.Logical().Write(path, data); err != nil {
			t.Fatalf("vault write %s: %v", path, err)
		}
	}
	write("auth/"+pki.JWTNomadPath+"/config", map[string]any{
		"jwks_url":           "http://" + e.ip + ":4646/.well-known/jwks.json",
		"jwt_supported_algs": []string{"RS256", "EdDSA"},
		"default_role":       pki.PolicyNomadWorkloads,
	})
	write("auth/"+pki.JWTNomadPath+"/role/"+pki.PolicyNomadWorkloads, map[string]any{
		"role_type":               "jwt",
		"bound_audiences":         []string{"vault.io"},
		"user_claim":              "/nomad_job_id",
		"user_claim_json_pointer": true,
		"claim_mappings":          map[string]string{"nomad_namespace": "nomad_namespace", "nomad_job_id": "nomad_job_id", "nomad_task": "nomad_task"},
		"token_type":              "service",
		"token_policies":          []string{pki.PolicyNomadWorkloads},
		"token_period":            "30m",
	})
	// The dev Vault mounts KV v2 at secret/. The tests use the Consul
	// management token where production has least-privilege ones.
	write("secret/data/general/fabio/consul", map[string]any{"data": map[string]any{"token": e.consul.Token}})
	write("secret/data/general/prometheus/tokens", map[string]any{"data": map[string]any{"consul": e.consul.Token, "nomad": "anonymous"}})
	write("secret/data/general/grafana/admin", map[string]any{"data": map[string]any{"password": grafanaPassword}})
}

// grafanaPassword is what the test stores in Vault for Grafana's admin.
const grafanaPassword = "from-vault-7d1e"
