package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// platform is the floor's platform: the same configuration, inventory,
// secret store and state directory layout as bootstrap's, so the project's
// own PKI code and the job files can be used on it as they are.
type platform struct {
	e   *stages.Env
	inv *inventory.Inventory
	bin string
	ps  *procs

	vaultAddr             string
	rootToken             string
	consulMgmt, nomadMgmt string
}

// newPlatform writes the configuration (provider "local" with every
// default but the subnet and bin_dir) and lays out the nodes like the local
// provider does.
func newPlatform(dir, bin string, o options, ps *procs) (*platform, error) {
	src := fmt.Sprintf("provider \"local\" {\n  servers = %d\n  clients = %d\n  subnet  = %q\n  bin_dir = %q\n}\n", o.servers, o.clients, o.subnet, bin)
	file := filepath.Join(dir, "platform.hcl")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		return nil, err
	}
	cfg, diags := config.Load(file)
	if diags.HasErrors() {
		return nil, fmt.Errorf("config: %s", diags.Error())
	}
	stateDir := filepath.Join(dir, ".bootstrap")
	store, err := secrets.Open(filepath.Join(stateDir, "secrets"), secrets.NewRedactor())
	if err != nil {
		return nil, err
	}
	state, err := statedir.Load(stateDir)
	if err != nil {
		return nil, err
	}
	p := &platform{e: stages.NewEnv(cfg, stateDir, store, state, io.Discard, nil), bin: bin, ps: ps}
	if p.inv, err = localInventory(cfg, stateDir, bin); err != nil {
		return nil, err
	}
	invFile := filepath.Join(stateDir, "inventory.json")
	if err := p.inv.Save(invFile); err != nil {
		return nil, err
	}
	if err := state.SetOutput(stages.OutInventory, invFile); err != nil {
		return nil, err
	}
	for _, n := range p.inv.Nodes {
		ps.dirs = append(ps.dirs, n.Local.Root)
	}
	// The keys stage's work: the gossip keys.
	for _, name := range []string{stages.SecretConsulGossipKey, stages.SecretNomadGossipKey} {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		if err := store.Put(name, base64.StdEncoding.EncodeToString(b)); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// localInventory is the local provider's layout (stages/provision):
// servers first on .1, .2, …, then clients, each with its own tree and a
// share of Nomad's dynamic port range.
func localInventory(cfg *config.Platform, stateDir, bin string) (*inventory.Inventory, error) {
	l := cfg.Provider.Local
	pfx, err := netip.ParsePrefix(l.Subnet)
	if err != nil {
		return nil, err
	}
	addr := pfx.Masked().Addr()
	next := func() string { addr = addr.Next(); return addr.String() }
	var servers []string
	for i := 1; i <= l.Servers; i++ {
		servers = append(servers, fmt.Sprintf("server-%d", i))
	}
	vault := cfg.Vault.VaultNodes(servers)
	inv := &inventory.Inventory{Version: inventory.Version}
	for _, name := range servers {
		roles := []string{inventory.RoleServer}
		if slices.Contains(vault, name) {
			roles = append(roles, inventory.RoleVault)
		}
		inv.Nodes = append(inv.Nodes, inventory.Node{Name: name, Roles: roles, PrivateIP: next(),
			Local: &inventory.Local{Root: filepath.Join(stateDir, "nodes", name), BinDir: bin}})
	}
	const lo, hi = 20000, 32000
	span := (hi - lo) / l.Clients
	for i := 1; i <= l.Clients; i++ {
		min := lo + (i-1)*span
		inv.Nodes = append(inv.Nodes, inventory.Node{Name: fmt.Sprintf("client-%d", i), Roles: []string{inventory.RoleClient}, PrivateIP: next(),
			Local: &inventory.Local{Root: filepath.Join(stateDir, "nodes", fmt.Sprintf("client-%d", i)), BinDir: bin, MinDynamicPort: min, MaxDynamicPort: min + span - 1}})
	}
	return inv, inv.Validate(cfg.Filename)
}

// path is a file of node n: root/elem...
func path(n inventory.Node, elem ...string) string {
	return filepath.Join(append([]string{n.Local.Root}, elem...)...)
}

// writeFile writes a file, creating its directory.
func writeFile(name, content string, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		return err
	}
	return os.WriteFile(name, []byte(content), perm)
}
