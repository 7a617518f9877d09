package ansible

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// The platform.hcl settings that reach the nodes through the roles'
// templates change what the roles write. consul { ui }: the servers' agent
// configuration has ui_config enabled or not (clients never serve the UI).
// consul { domain } and consul { dns } are passed the same way (consul_domain
// to every play, consul_dns with ConsulVars, the consul play's own) and are
// covered by the platform tests, which query Consul's DNS.
func TestConsulUISetting(t *testing.T) {
	bin := needAnsible(t)
	for _, ui := range []bool{true, false} {
		got := renderConsulConfig(t, bin, func(c *config.Platform) { c.Consul.UI = ui })
		want := map[string]bool{"server-1": ui, "client-1": false}
		for node, on := range want {
			line := "enabled = false"
			if on {
				line = "enabled = true"
			}
			if !strings.Contains(got[node], "ui_config {\n  "+line+"\n}") {
				t.Errorf("consul { ui = %v }: %s's consul.hcl lacks ui_config { %s }:\n%s", ui, node, line, got[node])
			}
		}
	}
}

// Nomad's web UI is served by the servers only: a client's HTTP API may be
// on a public address, and the UI's address that up prints is a server's.
func TestNomadUIOnServersOnly(t *testing.T) {
	bin := needAnsible(t)
	got := renderConfig(t, bin, "nomad", "nomad.hcl.j2", func(*config.Platform) (map[string]any, map[string]any) {
		return map[string]any{"vault_addr": "https://127.0.1.1:8200"}, nil
	})
	for node, line := range map[string]string{"server-1": "enabled = true", "client-1": "enabled = false"} {
		if !strings.Contains(got[node], "ui {\n  "+line+"\n}") {
			t.Errorf("%s's nomad.hcl lacks ui { %s }:\n%s", node, line, got[node])
		}
	}
}

// renderConsulConfig renders the consul role's consul.hcl for a server and a
// client of a local platform whose configuration set changes.
func renderConsulConfig(t *testing.T, ansibleBin string, set func(*config.Platform)) map[string]string {
	t.Helper()
	return renderConfig(t, ansibleBin, "consul", "consul.hcl.j2", func(cfg *config.Platform) (map[string]any, map[string]any) {
		set(cfg)
		return ConsulVars(cfg)
	})
}

// renderConfig renders a role's template for a server and a client of a
// local platform, with the real Ansible, from the inventory Converge would
// write with the play's variables that vars returns (none when nil) after
// changing the configuration. It returns node → text.
func renderConfig(t *testing.T, ansibleBin, role, template string, vars func(*config.Platform) (map[string]any, map[string]any)) map[string]string {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Defaults()
	cfg.Dir = dir
	cfg.Provider = config.Provider{Type: "local", Local: &config.LocalProvider{}}
	stateDir := filepath.Join(dir, "state")
	state, store, err := stages.OpenReadOnly(stateDir, secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	e := stages.NewEnv(cfg, stateDir, store, state, nil, nil)
	inv := &inventory.Inventory{Version: inventory.Version, Nodes: []inventory.Node{
		{Name: "server-1", Roles: []string{"server"}, PrivateIP: "127.0.1.1", Local: &inventory.Local{Root: filepath.Join(dir, "server-1"), BinDir: "/b"}},
		{Name: "client-1", Roles: []string{"client"}, PrivateIP: "127.0.1.2", Local: &inventory.Local{Root: filepath.Join(dir, "client-1"), BinDir: "/b"}},
	}}
	var play Play
	if vars != nil {
		play.Vars, play.ServerVars = vars(cfg)
	}
	ai := play.inventory(e, inv)
	// Role defaults have the lowest precedence: they fill in only what the
	// inventory does not set.
	roles := filepath.Join(dir, "ansible")
	if err := Extract(roles); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"common", role} {
		b, err := os.ReadFile(filepath.Join(roles, "roles", r, "defaults", "main.yml"))
		if err != nil {
			t.Fatal(err)
		}
		var defaults map[string]any
		if err := yaml.Unmarshal(b, &defaults); err != nil {
			t.Fatal(err)
		}
		for k, v := range defaults {
			if _, ok := ai.Vars[k]; !ok {
				ai.Vars[k] = v
			}
		}
	}
	b, err := json.Marshal(ai)
	if err != nil {
		t.Fatal(err)
	}
	invFile := filepath.Join(dir, "inventory.json")
	writeTestFile(t, invFile, b)
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ansibleBin, "-i", invFile, "all", "-m", "ansible.builtin.template",
		"-a", "src="+filepath.Join(roles, "roles", role, "templates", template)+" dest="+out+"/{{ inventory_hostname }}.hcl")
	cmd.Env = append(os.Environ(), "ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "tmp"), "ANSIBLE_REMOTE_TEMP="+filepath.Join(dir, "tmp"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ansible: %v\n%s", err, b)
	}
	got := map[string]string{}
	for _, n := range inv.Nodes {
		b, err := os.ReadFile(filepath.Join(out, n.Name+".hcl"))
		if err != nil {
			t.Fatal(err)
		}
		got[n.Name] = string(b)
	}
	return got
}

func writeTestFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// needAnsible returns the path of the ansible command, or skips the test
// (fails it when BOOTSTRAP_REQUIRE_TOOLS=1) where there is none.
func needAnsible(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs ansible")
	}
	bin, err := exec.LookPath("ansible")
	if err != nil {
		if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
			t.Fatal(err)
		}
		t.Skip("ansible is not installed")
	}
	return bin
}
