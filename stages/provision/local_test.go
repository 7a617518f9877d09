package provision

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
)

// TestLocalAddressesStay: a node keeps its address whatever the server or
// client count becomes; a new node takes the lowest free address.
func TestLocalAddressesStay(t *testing.T) {
	bin := t.TempDir()
	for _, b := range []string{"vault", "consul", "nomad", "consul-template"} {
		if err := os.WriteFile(filepath.Join(bin, b), nil, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	cfg := func(servers, clients int) *config.Platform {
		return &config.Platform{Filename: "platform.hcl", Provider: config.Provider{Type: "local", Local: &config.LocalProvider{
			Servers: servers, Clients: clients, Subnet: "127.77.0.0/24", BinDir: bin,
		}}}
	}
	addrs := func(inv *inventory.Inventory) map[string]string {
		out := map[string]string{}
		for _, n := range inv.Nodes {
			out[n.Name] = n.PrivateIP
		}
		return out
	}
	var have *inventory.Inventory
	for _, step := range []struct {
		servers, clients int
		want             map[string]string
	}{
		{3, 2, map[string]string{"server-1": "127.77.0.1", "server-2": "127.77.0.2", "server-3": "127.77.0.3", "client-1": "127.77.0.4", "client-2": "127.77.0.5"}},
		{5, 2, map[string]string{"server-1": "127.77.0.1", "server-2": "127.77.0.2", "server-3": "127.77.0.3", "server-4": "127.77.0.6", "server-5": "127.77.0.7", "client-1": "127.77.0.4", "client-2": "127.77.0.5"}},
		{3, 2, map[string]string{"server-1": "127.77.0.1", "server-2": "127.77.0.2", "server-3": "127.77.0.3", "client-1": "127.77.0.4", "client-2": "127.77.0.5"}},
		{3, 3, map[string]string{"server-1": "127.77.0.1", "server-2": "127.77.0.2", "server-3": "127.77.0.3", "client-1": "127.77.0.4", "client-2": "127.77.0.5", "client-3": "127.77.0.6"}},
	} {
		inv, err := localInventory(cfg(step.servers, step.clients), t.TempDir(), have)
		if err != nil {
			t.Fatal(err)
		}
		got := addrs(inv)
		if len(got) != len(step.want) {
			t.Fatalf("%d servers, %d clients: %v, want %v", step.servers, step.clients, got, step.want)
		}
		for name, a := range step.want {
			if got[name] != a {
				t.Errorf("%d servers, %d clients: %s at %s, want %s", step.servers, step.clients, name, got[name], a)
			}
		}
		have = inv
	}
}

func TestServerRemoval(t *testing.T) {
	cfg := &config.Platform{Filename: "platform.hcl"}
	server := inventory.Node{Name: "server-5", Roles: []string{inventory.RoleServer}}
	vault := inventory.Node{Name: "server-1", Roles: []string{inventory.RoleServer, inventory.RoleVault}}
	if err := refuseServerRemoval(cfg, []inventory.Node{server}); err != nil {
		t.Errorf("removing a server: %v", err)
	}
	err := refuseServerRemoval(cfg, []inventory.Node{server, vault})
	if err == nil || !strings.Contains(err.Error(), "platform.hcl") || !strings.Contains(err.Error(), "server-1") || strings.Contains(err.Error(), "server-5") {
		t.Errorf("removing a Vault server: %v", err)
	}
	if d := retireDetail(cfg, server); !strings.Contains(d, "Raft") {
		t.Errorf("the plan of a server's removal says %q", d)
	}
}

func TestPlanOfServerRemoval(t *testing.T) {
	node := func(name, role string) inventory.Node {
		return inventory.Node{Name: name, Roles: []string{role}, PrivateIP: "127.0.0.1"}
	}
	have := &inventory.Inventory{Nodes: []inventory.Node{
		node("server-1", inventory.RoleServer), node("server-2", inventory.RoleServer), node("server-3", inventory.RoleServer),
		node("server-4", inventory.RoleServer), node("server-5", inventory.RoleServer), node("client-1", inventory.RoleClient),
	}}
	want := &inventory.Inventory{Nodes: []inventory.Node{have.Nodes[0], have.Nodes[1], have.Nodes[2], have.Nodes[5]}}
	var got []string
	for _, c := range diffNodes(&config.Platform{}, have, want) {
		got = append(got, c.Target+": "+c.Detail)
	}
	if len(got) != 2 || !strings.HasPrefix(got[0], "node server-5: ") || !strings.HasSuffix(got[0], "(5 → 4 voters)") ||
		!strings.HasPrefix(got[1], "node server-4: ") || !strings.HasSuffix(got[1], "(4 → 3 voters)") {
		t.Errorf("plan of 5 → 3 servers:\n%s", strings.Join(got, "\n"))
	}
}
