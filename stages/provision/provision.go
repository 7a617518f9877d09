// Package provision is the stage that yields the inventory: machines from the
// local provider (nodes as processes on this machine), a static inventory of
// existing machines, or a Terraform module.
package provision

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/platform-bootstrap/bootstrap/ansible"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/parallel"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Stage is the provision stage.
type Stage struct{}

// New returns the provision stage.
func New() *Stage { return &Stage{} }

// Name is "provision".
func (*Stage) Name() string { return "provision" }

// InventoryPath is where the stage keeps the inventory.
func InventoryPath(e *stages.Env) string { return e.Path("inventory.json") }

// desired builds the inventory the configuration asks for. Terraform's comes
// from its outputs, so it is only known after apply.
func desired(e *stages.Env) (*inventory.Inventory, error) {
	cfg := e.Config
	switch {
	case cfg.Provider.Local != nil:
		have, err := loadExisting(e)
		if err != nil {
			return nil, err
		}
		return localInventory(cfg, e.StateDir, have)
	case cfg.Provider.Static != nil:
		return staticInventory(cfg, e)
	}
	return nil, fmt.Errorf("provider %q is not supported by this stage", cfg.Provider.Type)
}

// Plan compares the inventory the configuration asks for with the recorded
// one and, for local nodes, with the node directories on disk.
func (s *Stage) Plan(ctx context.Context, e *stages.Env) ([]stages.Change, error) {
	if e.Config.Provider.Terraform != nil {
		return planTerraform(ctx, e)
	}
	want, err := desired(e)
	if err != nil {
		return nil, err
	}
	have, err := loadExisting(e)
	if err != nil {
		return nil, err
	}
	if err := refuseServerRemoval(e.Config, removed(have, want)); err != nil {
		return nil, err
	}
	var out []stages.Change
	if have == nil {
		out = append(out, stages.Change{Action: "create", Target: "inventory", Detail: fmt.Sprintf("%d node(s), %s provider", len(want.Nodes), e.Config.Provider.Type)})
	} else {
		out = append(out, diffNodes(e.Config, have, want)...)
	}
	for _, n := range want.Nodes {
		if n.Local == nil {
			continue
		}
		if _, err := os.Stat(n.Local.Root); err != nil {
			out = append(out, stages.Change{Action: "create", Target: "node " + n.Name, Detail: n.PrivateIP + ", " + n.Local.Root})
		}
	}
	return out, nil
}

// loadExisting reads the recorded inventory; nil when there is none.
func loadExisting(e *stages.Env) (*inventory.Inventory, error) {
	path := e.State.Output(stages.OutInventory)
	if path == "" {
		return nil, nil
	}
	inv, err := inventory.LoadSaved(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return inv, err
}

func diffNodes(cfg *config.Platform, have, want *inventory.Inventory) []stages.Change {
	var out []stages.Change
	for _, w := range want.Nodes {
		h, ok := have.Node(w.Name)
		switch {
		case !ok:
			out = append(out, stages.Change{Action: "create", Target: "node " + w.Name, Detail: strings.Join(w.Roles, ",")})
		case !inventory.Equal(&inventory.Inventory{Nodes: []inventory.Node{h}}, &inventory.Inventory{Nodes: []inventory.Node{w}}):
			out = append(out, stages.Change{Action: "update", Target: "node " + w.Name, Detail: describeDiff(h, w)})
		}
	}
	gone := removed(have, want)
	// Servers leave highest number first, one voter at a time (retire).
	voters := len(have.WithRole(inventory.RoleServer))
	slices.SortStableFunc(gone, func(a, b inventory.Node) int {
		if a.Has(inventory.RoleServer) && b.Has(inventory.RoleServer) {
			return strings.Compare(b.Name, a.Name)
		}
		return 0
	})
	for _, h := range gone {
		detail := retireDetail(cfg, h)
		if h.Has(inventory.RoleServer) {
			detail += fmt.Sprintf(" (%d → %d voters)", voters, voters-1)
			voters--
		}
		out = append(out, stages.Change{Action: "delete", Target: "node " + h.Name, Detail: detail})
	}
	return out
}

func describeDiff(a, b inventory.Node) string {
	var d []string
	if !slices.Equal(a.Roles, b.Roles) {
		d = append(d, fmt.Sprintf("roles %s → %s", strings.Join(a.Roles, ","), strings.Join(b.Roles, ",")))
	}
	if a.PrivateIP != b.PrivateIP || a.PublicIP != b.PublicIP {
		d = append(d, fmt.Sprintf("address %s → %s", a.APIAddress(), b.APIAddress()))
	}
	if a.SSH != b.SSH {
		d = append(d, "ssh settings")
	}
	if len(d) == 0 {
		d = append(d, "node settings")
	}
	return strings.Join(d, ", ")
}

// Apply writes the inventory and prepares the nodes.
func (s *Stage) Apply(ctx context.Context, e *stages.Env) error {
	if e.Config.Provider.Terraform != nil {
		return applyTerraform(ctx, e)
	}
	want, err := desired(e)
	if err != nil {
		return err
	}
	have, err := loadExisting(e)
	if err != nil {
		return err
	}
	if gone := removed(have, want); len(gone) > 0 {
		if err := refuseServerRemoval(e.Config, gone); err != nil {
			return err
		}
		if err := retire(ctx, e, gone, want); err != nil {
			return err
		}
	}
	for _, n := range want.Nodes {
		if n.Local == nil {
			continue
		}
		if err := os.MkdirAll(n.Local.Root, 0o700); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	if want.Nodes[0].Local == nil {
		if err := waitSSH(ctx, e, want); err != nil {
			return err
		}
	}
	return save(e, want)
}

func save(e *stages.Env, inv *inventory.Inventory) error {
	path := InventoryPath(e)
	if err := inv.Save(path); err != nil {
		return err
	}
	return e.State.SetOutput(stages.OutInventory, path)
}

// Destroy stops everything the nodes run and removes them.
func (s *Stage) Destroy(ctx context.Context, e *stages.Env) error {
	if e.Config.Provider.Terraform != nil {
		if err := destroyTerraform(ctx, e); err != nil {
			return err
		}
	}
	inv, err := loadExisting(e)
	if err != nil {
		return err
	}
	if inv != nil && e.Config.Provider.Static != nil {
		e.Step("stopping the platform's services on %d machine(s)", len(inv.Nodes))
		if err := ansible.Teardown(ctx, e, inv); err != nil {
			return err
		}
	}
	// Every local node is stopped at once: each waits for its own agents
	// to shut down, and none depends on another.
	var local []inventory.Node
	if inv != nil {
		for _, n := range inv.Nodes {
			if n.Local != nil {
				local = append(local, n)
			}
		}
	}
	if len(local) > 0 {
		e.Step("stopping node(s) %s", strings.Join(inventory.Names(local), ", "))
	}
	if err := parallel.Each(local, func(n inventory.Node) error { return removeLocalNode(ctx, n) }); err != nil {
		return err
	}
	// The local provider's node trees live under nodes/; remove the parent
	// too so nothing is left behind.
	if err := os.RemoveAll(e.Path("nodes")); err != nil {
		return err
	}
	if err := os.Remove(InventoryPath(e)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return e.State.DeleteOutputs(stages.OutInventory)
}

// stopLocalNode stops every process of a local node: first the services by
// their pid files (so they shut down cleanly), then anything still running
// inside the node's tree — Nomad's raw_exec tasks and executors outlive the
// client that started them.
func stopLocalNode(ctx context.Context, n inventory.Node) error {
	// The services of a node are stopped at once too: each shuts down on
	// its own.
	pidfiles, _ := filepath.Glob(filepath.Join(n.Local.Root, "run", "*.pid"))
	services := parallel.Each(pidfiles, func(pf string) error {
		pid, err := proc.ReadPidFile(pf)
		if err != nil {
			return nil
		}
		err = proc.Terminate(ctx, pid, 20*time.Second)
		os.Remove(pf)
		return err
	})
	pids, err := proc.Under(n.Local.Root)
	left := parallel.Each(pids, func(pid int) error { return proc.Terminate(ctx, pid, 5*time.Second) })
	if err := errors.Join(services, err, left); err != nil {
		return fmt.Errorf("stop node %s: %w", n.Name, err)
	}
	return nil
}

func removeLocalNode(ctx context.Context, n inventory.Node) error {
	if err := stopLocalNode(ctx, n); err != nil {
		return err
	}
	// A Nomad client running as root mounts a tmpfs on each task's secrets/
	// and private/ directory and leaves them when it stops.
	if err := proc.UnmountUnder(n.Local.Root); err != nil {
		return fmt.Errorf("remove node %s: %w", n.Name, err)
	}
	if err := os.RemoveAll(n.Local.Root); err != nil {
		return fmt.Errorf("remove node %s: %w", n.Name, err)
	}
	return nil
}

// localInventory lays the nodes out on the loopback subnet: servers first
// (.1, .2, …), then clients. A node of the recorded inventory (have, nil
// when there is none) keeps its address, and a new one takes the first
// free one, so that adding or removing a server changes no other node.
// Clients share loopback, so Nomad's dynamic port range is split between
// them.
func localInventory(cfg *config.Platform, stateDir string, have *inventory.Inventory) (*inventory.Inventory, error) {
	l := cfg.Provider.Local
	pfx, err := netip.ParsePrefix(l.Subnet)
	if err != nil {
		return nil, err
	}
	binDir, err := localBinDir(cfg)
	if err != nil {
		return nil, err
	}
	stateDir, err = filepath.Abs(stateDir)
	if err != nil {
		return nil, err
	}
	kept := map[string]string{} // node name → its recorded address
	taken := map[string]bool{}
	if have != nil {
		for _, n := range have.Nodes {
			kept[n.Name] = n.PrivateIP
			taken[n.PrivateIP] = true
		}
	}
	addr := pfx.Masked().Addr()
	address := func(name string) string {
		if a, ok := kept[name]; ok {
			return a
		}
		for addr = addr.Next(); taken[addr.String()]; addr = addr.Next() {
		}
		taken[addr.String()] = true
		return addr.String()
	}
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
		inv.Nodes = append(inv.Nodes, inventory.Node{
			Name: name, Roles: roles, PrivateIP: address(name),
			Local: &inventory.Local{Root: filepath.Join(stateDir, "nodes", name), BinDir: binDir},
		})
	}
	// Every client has a slice of Nomad's dynamic port range of the same
	// size whatever their number, so adding a client leaves the others'
	// configuration, and agents, as they were.
	const lo, hi = 20000, 32000
	const span = (hi - lo) / (config.MaxLocalNodes - 1)
	for i := 1; i <= l.Clients; i++ {
		name := fmt.Sprintf("client-%d", i)
		min := lo + (i-1)*span
		inv.Nodes = append(inv.Nodes, inventory.Node{
			Name: name, Roles: []string{inventory.RoleClient}, PrivateIP: address(name),
			Local: &inventory.Local{
				Root: filepath.Join(stateDir, "nodes", name), BinDir: binDir,
				MinDynamicPort: min, MaxDynamicPort: min + span - 1,
			},
		})
	}
	for _, n := range inv.Nodes {
		if a, err := netip.ParseAddr(n.PrivateIP); err != nil || !pfx.Contains(a) || a == netip.PrefixFrom(a, pfx.Bits()).Masked().Addr() {
			return nil, fmt.Errorf("%s: subnet %q has no free address left for node %s (the nodes keep the addresses they have); use a larger subnet", cfg.Filename, l.Subnet, n.Name)
		}
	}
	return inv, inv.Validate(cfg.Filename)
}

// localBinDir finds the directory with vault, consul, nomad, …: bin_dir from
// the config, else ./bin next to the config (where `make tools` puts them),
// else the directory bootstrap itself runs from.
func localBinDir(cfg *config.Platform) (string, error) {
	var candidates []string
	if d := cfg.Provider.Local.BinDir; d != "" {
		candidates = []string{cfg.Path(d)}
	} else {
		candidates = append(candidates, filepath.Join(cfg.Dir, "bin"))
		if exe, err := os.Executable(); err == nil {
			candidates = append(candidates, filepath.Dir(exe))
		}
	}
	for _, d := range candidates {
		if st, err := os.Stat(filepath.Join(d, "vault")); err == nil && !st.IsDir() {
			return filepath.Abs(d)
		}
	}
	return "", fmt.Errorf("no vault binary in %s: run `make tools`, or set bin_dir in provider \"local\" to the directory holding vault, consul, nomad and consul-template", strings.Join(candidates, " or "))
}

func staticInventory(cfg *config.Platform, e *stages.Env) (*inventory.Inventory, error) {
	s := cfg.Provider.Static
	if s.Inventory != "" {
		path := cfg.Path(s.Inventory)
		// The user's file: inventory.Load refuses "local", which would let
		// it choose what `down` stops and removes on this machine.
		inv, err := inventory.Load(path)
		if err != nil {
			return nil, err
		}
		fillSSHKey(inv, e)
		return inv, nil
	}
	inv := &inventory.Inventory{Version: inventory.Version}
	for _, n := range s.Nodes {
		node := inventory.Node{Name: n.Name, Roles: n.Roles, PublicIP: n.PublicIP, PrivateIP: n.PrivateIP, SSH: inventory.SSH{User: "root", Port: 22}}
		if n.SSH != nil {
			if n.SSH.User != "" {
				node.SSH.User = n.SSH.User
			}
			if n.SSH.Port != 0 {
				node.SSH.Port = n.SSH.Port
			}
			node.SSH.PrivateKeyFile = n.SSH.PrivateKeyFile
			if kf := node.SSH.PrivateKeyFile; kf != "" && !filepath.IsAbs(kf) {
				node.SSH.PrivateKeyFile = filepath.Join(cfg.Dir, kf)
			}
		}
		inv.Nodes = append(inv.Nodes, node)
	}
	fillSSHKey(inv, e)
	return inv, inv.Validate(cfg.Filename)
}

// fillSSHKey points nodes without their own key at the keys stage's key.
func fillSSHKey(inv *inventory.Inventory, e *stages.Env) {
	for i := range inv.Nodes {
		if inv.Nodes[i].Local == nil && inv.Nodes[i].SSH.PrivateKeyFile == "" {
			inv.Nodes[i].SSH.PrivateKeyFile = e.Secrets.Path(stages.SecretSSHKey)
		}
	}
}
