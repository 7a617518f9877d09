package terraform

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
	"golang.org/x/crypto/ssh"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// The shipped cloud modules cannot be applied here (no cloud is
// reachable), but planning new resources makes no API call, so they are
// validated and planned for real with their providers built from the Go
// module proxy. DigitalOcean's provider is only available in its 2020
// version 1.22.2, so that module is checked against the older schema: the
// test copy overrides the pinned version.

func TestShippedModulesAreFormatted(t *testing.T) {
	tf := needTerraform(t)
	root := testcluster.RepoRoot()
	for _, m := range []string{"digitalocean", "hetzner", "lab", "testdata"} {
		out, err := exec.Command(tf, "fmt", "-check", "-recursive", "-diff", filepath.Join(root, "terraform", m)).CombinedOutput()
		if err != nil {
			t.Errorf("terraform fmt -check terraform/%s: %v\n%s", m, err, out)
		}
	}
}

type cloudModule struct {
	name     string
	provider string // in the mirror
	tokenEnv string
	override string // version override for the test copy
	// resources planned for the default sizes (3 servers, 2 clients, 1 volume)
	// and for 1 server, 1 client and no volume.
	defaults, small []string
	outputs         []string
}

var cloudModules = []cloudModule{
	{
		name:     "digitalocean",
		provider: "digitalocean/digitalocean",
		tokenEnv: "DIGITALOCEAN_TOKEN",
		override: `terraform {
  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "1.22.2"
    }
  }
}
`,
		defaults: []string{
			"digitalocean_droplet.client[0]", "digitalocean_droplet.client[1]",
			"digitalocean_droplet.server[0]", "digitalocean_droplet.server[1]", "digitalocean_droplet.server[2]",
			"digitalocean_firewall.nodes", "digitalocean_firewall.web", "digitalocean_project.this",
			"digitalocean_ssh_key.bootstrap", "digitalocean_volume.data[0]", "digitalocean_volume_attachment.data[0]",
			"digitalocean_vpc.this",
		},
		small: []string{
			"digitalocean_droplet.client[0]", "digitalocean_droplet.server[0]",
			"digitalocean_firewall.nodes", "digitalocean_firewall.web", "digitalocean_project.this",
			"digitalocean_ssh_key.bootstrap", "digitalocean_vpc.this",
		},
		outputs: []string{"output bootstrap_inventory", "output vpc_id"},
	},
	{
		name:     "hetzner",
		provider: "hetznercloud/hcloud",
		tokenEnv: "HCLOUD_TOKEN",
		defaults: []string{
			"hcloud_firewall.nodes", "hcloud_firewall.web", "hcloud_network.this", "hcloud_network_subnet.this",
			"hcloud_server.client[0]", "hcloud_server.client[1]",
			"hcloud_server.server[0]", "hcloud_server.server[1]", "hcloud_server.server[2]",
			"hcloud_server_network.client[0]", "hcloud_server_network.client[1]",
			"hcloud_server_network.server[0]", "hcloud_server_network.server[1]", "hcloud_server_network.server[2]",
			"hcloud_ssh_key.bootstrap", "hcloud_volume.data[0]", "hcloud_volume_attachment.data[0]",
		},
		small: []string{
			"hcloud_firewall.nodes", "hcloud_firewall.web", "hcloud_network.this", "hcloud_network_subnet.this",
			"hcloud_server.client[0]", "hcloud_server.server[0]",
			"hcloud_server_network.client[0]", "hcloud_server_network.server[0]",
			"hcloud_ssh_key.bootstrap",
		},
		outputs: []string{"output bootstrap_inventory", "output network_id"},
	},
}

func creates(targets ...[]string) []stages.Change {
	var out []stages.Change
	for _, list := range targets {
		for _, tg := range list {
			out = append(out, stages.Change{Action: "create", Target: tg})
		}
	}
	return out
}

func publicKey(t *testing.T) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

// moduleCopy copies a shipped module, with the test's version override.
func moduleCopy(t *testing.T, m cloudModule) string {
	dir := filepath.Join(t.TempDir(), m.name)
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(testcluster.RepoRoot(), "terraform", m.name))); err != nil {
		t.Fatal(err)
	}
	if m.override != "" {
		if err := os.WriteFile(filepath.Join(dir, "versions_override.tf"), []byte(m.override), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestShippedModulesPlanOffline(t *testing.T) {
	for _, m := range cloudModules {
		t.Run(m.name, func(t *testing.T) {
			tf := needTerraform(t, m.provider)
			ctx := ctxFor(t)
			b := make([]byte, 32)
			rand.Read(b)
			token := hex.EncodeToString(b)
			t.Setenv(m.tokenEnv, token)
			module := moduleCopy(t, m)
			base := map[string]cty.Value{
				"ssh_public_key":   cty.StringVal(publicKey(t)),
				"ssh_allowed_cidr": cty.StringVal("203.0.113.0/24"),
			}
			plan := func(extra map[string]cty.Value) ([]stages.Change, *Runner, error) {
				vars := map[string]cty.Value{}
				for k, v := range base {
					vars[k] = v
				}
				for k, v := range extra {
					vars[k] = v
				}
				cfg := &config.TerraformProvider{Module: module, Vars: vars, Binary: tf, Backend: "local"}
				r, _ := newRunner(t, cfg, "/", t.TempDir())
				changes, err := r.Plan(ctx)
				return changes, r, err
			}

			changes, r, err := plan(nil)
			if err != nil {
				t.Fatal(err)
			}
			wantChanges(t, changes, creates(m.defaults, m.outputs))
			v, err := r.tf.Validate(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !v.Valid || v.WarningCount != 0 {
				t.Fatalf("terraform validate: valid=%v, %d errors, %d warnings: %+v", v.Valid, v.ErrorCount, v.WarningCount, v.Diagnostics)
			}
			if n := grepTree(t, r.Dir(), token); n < 5 {
				t.Fatalf("only %d files checked", n)
			}

			changes, _, err = plan(map[string]cty.Value{
				"num_servers": cty.NumberIntVal(1), "num_clients": cty.NumberIntVal(1), "num_volumes": cty.NumberIntVal(0),
			})
			if err != nil {
				t.Fatal(err)
			}
			wantChanges(t, changes, creates(m.small, m.outputs))

			for _, c := range []struct {
				vars map[string]cty.Value
				want string
			}{
				{map[string]cty.Value{"num_servers": cty.NumberIntVal(2)}, "num_servers must be odd"},
				{map[string]cty.Value{"num_servers": cty.NumberIntVal(1), "vault_ha": cty.True}, "vault_ha option runs Vault on three servers"},
				{map[string]cty.Value{"ssh_allowed_cidr": cty.StringVal("everyone")}, "ssh_allowed_cidr must be a CIDR range"},
				{map[string]cty.Value{"ssh_public_key": cty.StringVal("hunter2")}, "ssh_public_key must be an OpenSSH public key"},
			} {
				_, _, err := plan(c.vars)
				if err == nil || !strings.Contains(strings.Join(strings.Fields(err.Error()), " "), c.want) {
					t.Errorf("vars %v: error %v, want %q", c.vars, err, c.want)
				}
			}

			// ssh_allowed_cidr has no default: the machines are never open to
			// the world by accident.
			delete(base, "ssh_allowed_cidr")
			if _, _, err := plan(nil); err == nil || !strings.Contains(err.Error(), "ssh_allowed_cidr") {
				t.Errorf("plan without ssh_allowed_cidr: %v", err)
			}
		})
	}
}
