package provision_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/provision"
)

func testEnv(t *testing.T, cfg *config.Platform) *stages.Env {
	t.Helper()
	dir := t.TempDir()
	state, store, err := stages.OpenReadOnly(dir, secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	return stages.NewEnv(cfg, dir, store, state, nil, nil)
}

// A static inventory file is the user's, not bootstrap's: a node's "local"
// field would let it choose what `down` stops and removes on this machine.
func TestStaticInventoryRefusesLocal(t *testing.T) {
	cfgDir := t.TempDir()
	const doc = `{"version": 1, "nodes": [{"name": "server-1", "roles": ["server", "client"], "private_ip": "10.0.0.1",
	  "local": {"root": "/home", "bin_dir": "/usr/bin"}}]}`
	if err := os.WriteFile(filepath.Join(cfgDir, "inventory.json"), []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Platform{Filename: filepath.Join(cfgDir, "platform.hcl"), Dir: cfgDir,
		Provider: config.Provider{Type: "static", Static: &config.StaticProvider{Inventory: "inventory.json"}}}
	e := testEnv(t, cfg)
	for name, call := range map[string]func(context.Context, *stages.Env) error{
		"Plan":  func(ctx context.Context, e *stages.Env) error { _, err := provision.New().Plan(ctx, e); return err },
		"Apply": provision.New().Apply,
	} {
		err := call(context.Background(), e)
		if !errors.As(err, new(*inventory.LocalFieldError)) {
			t.Fatalf("%s = %v, want a *LocalFieldError", name, err)
		}
		if msg := err.Error(); !strings.Contains(msg, filepath.Join(cfgDir, "inventory.json")) || !strings.Contains(msg, `"local"`) {
			t.Errorf("%s: message %q does not name the file and the field", name, msg)
		}
	}
	if _, err := os.Stat(provision.InventoryPath(e)); !os.IsNotExist(err) {
		t.Errorf("the refused inventory was recorded (%v)", err)
	}
}

// The local provider records its nodes, "local" included, in the state
// directory; every later stage reads them back from there.
func TestRecordedLocalInventoryLoads(t *testing.T) {
	e := testEnv(t, &config.Platform{Provider: config.Provider{Type: "local", Local: &config.LocalProvider{Servers: 1, Clients: 1}}})
	want := &inventory.Inventory{Version: inventory.Version, Nodes: []inventory.Node{
		{Name: "server-1", Roles: []string{inventory.RoleServer}, PrivateIP: "127.0.0.2",
			Local: &inventory.Local{Root: e.Path("nodes", "server-1"), BinDir: "/opt/bin"}},
		{Name: "client-1", Roles: []string{inventory.RoleClient}, PrivateIP: "127.0.0.3",
			Local: &inventory.Local{Root: e.Path("nodes", "client-1"), BinDir: "/opt/bin", MinDynamicPort: 20000, MaxDynamicPort: 31999}},
	}}
	if err := want.Save(provision.InventoryPath(e)); err != nil {
		t.Fatal(err)
	}
	if err := e.State.SetOutput(stages.OutInventory, provision.InventoryPath(e)); err != nil {
		t.Fatal(err)
	}
	got, err := e.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if !inventory.Equal(got, want) {
		t.Errorf("Load = %+v, want %+v", got, want)
	}
}
