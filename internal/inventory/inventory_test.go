package inventory

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const node = `{"name": "server-1", "roles": ["server", "client"], "private_ip": "10.0.0.1"`

// An inventory from outside bootstrap must not describe local nodes: `down`
// would stop the processes under, and remove, a directory it chose.
func TestLoadRefusesLocal(t *testing.T) {
	for _, local := range []string{
		`"local": {"root": "/home/someone", "bin_dir": "/usr/bin"}`,
		`"Local": {"root": "/home/someone"}`, // encoding/json ignores case
		`"LOCAL": {"root": "/home/someone"}`,
		`"local": null`,
		`"local": {}`,
	} {
		path := filepath.Join(t.TempDir(), "inventory.json")
		doc := `{"version": 1, "nodes": [` + node + `, ` + local + `}]}`
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		inv, err := Load(path)
		var lf *LocalFieldError
		if !errors.As(err, &lf) {
			t.Fatalf("%s: Load = %+v, %v; want a *LocalFieldError", local, inv, err)
		}
		if lf.Source != path || lf.Node != `node "server-1"` {
			t.Errorf("%s: error names %q, %q", local, lf.Source, lf.Node)
		}
		if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, `"local"`) {
			t.Errorf("%s: message %q does not name the file and the field", local, msg)
		}
	}
}

func TestParseNamesNodeWithoutName(t *testing.T) {
	doc := `{"version": 1, "nodes": [{"roles": ["server"], "private_ip": "10.0.0.1", "local": {"root": "/"}}]}`
	_, err := Parse([]byte(doc), "terraform output")
	var lf *LocalFieldError
	if !errors.As(err, &lf) || lf.Node != "nodes[0]" || lf.Source != "terraform output" {
		t.Fatalf("Parse = %v (%+v)", err, lf)
	}
}

func TestParseExternal(t *testing.T) {
	doc := `{"version": 1, "nodes": [` + node + `, "ssh": {"user": "admin"}, "provider_id": "i-123"}]}`
	inv, err := Parse([]byte(doc), "inventory.json")
	if err != nil {
		t.Fatal(err)
	}
	n := inv.Nodes[0]
	if n.Local != nil || n.SSH.User != "admin" || n.SSH.Port != 22 || n.PrivateIP != "10.0.0.1" || !n.Has(RoleClient) {
		t.Errorf("node = %+v", n)
	}
}

// The local provider's inventory goes through the state directory and must
// come back whole.
func TestSavedLocalRoundTrip(t *testing.T) {
	want := &Inventory{Version: Version, Nodes: []Node{
		{Name: "server-1", Roles: []string{RoleServer, RoleVault}, PrivateIP: "127.0.0.2",
			Local: &Local{Root: "/state/nodes/server-1", BinDir: "/opt/bin"}},
		{Name: "client-1", Roles: []string{RoleClient}, PrivateIP: "127.0.0.3",
			Local: &Local{Root: "/state/nodes/client-1", BinDir: "/opt/bin", MinDynamicPort: 20000, MaxDynamicPort: 31999}},
	}}
	path := filepath.Join(t.TempDir(), "inventory.json")
	if err := want.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := LoadSaved(path)
	if err != nil {
		t.Fatal(err)
	}
	if !Equal(got, want) {
		t.Errorf("LoadSaved = %+v, want %+v", got, want)
	}
	// The same file given as a user's inventory is refused.
	if _, err := Load(path); !errors.As(err, new(*LocalFieldError)) {
		t.Errorf("Load of a local inventory = %v, want a *LocalFieldError", err)
	}
}

func TestDataDevice(t *testing.T) {
	for _, tc := range []struct {
		node, err string
	}{
		{`{"name": "client-1", "roles": ["client"], "private_ip": "10.0.0.2", "data_device": "/dev/disk/by-id/scsi-0DO_Volume_data-1"}`, ""},
		{`{"name": "client-1", "roles": ["client"], "private_ip": "10.0.0.2", "data_device": "sdb"}`, `node "client-1": data_device "sdb" is not a device under /dev/`},
		{`{"name": "server-2", "roles": ["server"], "private_ip": "10.0.0.2", "data_device": "/dev/sdb"}, {"name": "server-3", "roles": ["server"], "private_ip": "10.0.0.3"}, {"name": "client-1", "roles": ["client"], "private_ip": "10.0.0.4"}`,
			`node "server-2": data_device: only a client runs Prometheus`},
	} {
		doc := `{"version": 1, "nodes": [` + node + `}, ` + tc.node + `]}`
		_, err := Parse([]byte(doc), "inventory.json")
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.node, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want %q", tc.node, err, tc.err)
		}
	}
}

func TestClientsOnly(t *testing.T) {
	inv := &Inventory{Nodes: []Node{
		{Name: "server-1", Roles: []string{RoleServer, RoleClient}},
		{Name: "client-2", Roles: []string{RoleClient}},
		{Name: "server-2", Roles: []string{RoleServer}},
		{Name: "client-1", Roles: []string{RoleClient}},
	}}
	var got []string
	for _, n := range inv.ClientsOnly() {
		got = append(got, n.Name)
	}
	if want := "client-2 client-1"; strings.Join(got, " ") != want {
		t.Errorf("ClientsOnly = %v, want %s (the clients that are not servers, in inventory order)", got, want)
	}
}
