// Package lab runs a lab of real machines on this Linux box: systemd-nspawn
// containers that boot systemd as PID 1, each with its own IP on a bridge
// the lab creates, sshd, and a copy-on-write overlay of one cached Debian
// rootfs. They stand in for cloud machines so that bootstrap's path to
// production (SSH, systemd units, binaries copied over) runs for real.
//
// Everything the lab creates is recorded in a state file before it is
// created, so Down removes every machine, mount, link and cgroup from that
// file alone, even after a failed or killed Up.
package lab

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
)

// Node is a machine to create: its name (also its hostname) and its roles
// in the platform's inventory.
type Node struct {
	Name  string
	Roles []string
}

// Nodes lays out servers then clients as the local provider does: the
// first server also runs Vault.
func Nodes(servers, clients int) []Node {
	var out []Node
	for i := 1; i <= servers; i++ {
		roles := []string{inventory.RoleServer}
		if i == 1 {
			roles = append(roles, inventory.RoleVault)
		}
		out = append(out, Node{fmt.Sprintf("server-%d", i), roles})
	}
	for i := 1; i <= clients; i++ {
		out = append(out, Node{fmt.Sprintf("client-%d", i), []string{inventory.RoleClient}})
	}
	return out
}

// Config describes a lab.
type Config struct {
	// Dir holds the state file, the machines' overlays, the lab's SSH key,
	// inventory.json and lab.hcl.
	Dir string
	// Name is short (it prefixes the bridge and the machine names, which
	// end up in 15-character interface names) and unique among the labs
	// running on this box.
	Name string
	// Net picks the lab's network, 10.213.<Net>.0/24: the host is .1 on the
	// bridge, machines are .10 onwards.
	Net   int
	Nodes []Node
	// AuthorizedKeys are extra public keys (authorized_keys lines) root
	// accepts; the lab's own key is always accepted.
	AuthorizedKeys []string
	// CacheDir keeps the rootfs (default: DefaultCacheDir); Mirror is the
	// Debian mirror to build it from (default: the one apt uses here).
	CacheDir string
	Mirror   string
	// BinDir is written into lab.hcl as the provider's bin_dir: the
	// binaries bootstrap copies to the machines. It is also shared with
	// the machines read-only at the same path (with every directory its
	// symlinks lead through): the platform jobs' raw_exec profile runs
	// binaries that are already on the clients.
	BinDir string
	// DataVolumes names the machines that get a data volume, as a cloud
	// volume attached to a droplet: a sparse file of DataVolumeMB on a
	// loop device, which the machine sees at the same /dev path and the
	// inventory gives as its data_device.
	DataVolumes []string
	// Public gives every client a second, public address besides its
	// private one, as a cloud droplet has besides its VPC address:
	// 10.214.<Net>.<the last octet of its private address> on a second
	// bridge, where the host (the admin's laptop on the Internet) is .1 and
	// an outside network namespace (a user on the Internet: State.Outside)
	// is .2. Servers get no public address.
	Public bool
	// Owner is the pid of the process the lab lives for (a test), or 0
	// for a lab that outlives the process that made it (make lab-up). Up
	// first takes down a lab of the same name whose owner is gone: a test
	// killed before its cleanup (go test's -timeout panics past it) left
	// that lab running, and its links would refuse every later run.
	Owner int
	Log   io.Writer
}

// DataVolumeMB is the size of a machine's data volume.
const DataVolumeMB = 512

// State is what the lab created, written before each thing is created.
type State struct {
	Name     string    `json:"name"`
	Dir      string    `json:"dir"`
	Bridge   string    `json:"bridge"`
	HostCIDR string    `json:"host_cidr"` // the host's address on the bridge
	Rootfs   string    `json:"rootfs"`
	KeyFile  string    `json:"key_file"` // the lab's SSH private key
	Machines []Machine `json:"machines"`
	// The public network (Config.Public): its bridge and the host's
	// address on it; the outside network namespace, the host end of the
	// veth that joins it to the bridge, and its address there.
	PublicBridge   string `json:"public_bridge,omitempty"`
	PublicHostCIDR string `json:"public_host_cidr,omitempty"`
	OutsideNetns   string `json:"outside_netns,omitempty"`
	OutsideVeth    string `json:"outside_veth,omitempty"`
	OutsideIP      string `json:"outside_ip,omitempty"`
	// Owner and OwnerStart (clock ticks since boot, against pid reuse):
	// Config.Owner.
	Owner      int    `json:"owner_pid,omitempty"`
	OwnerStart uint64 `json:"owner_start,omitempty"`
}

// Machine is one machine of the lab.
type Machine struct {
	Name  string   `json:"name"`  // node name and hostname
	Unit  string   `json:"unit"`  // systemd-nspawn's --machine name
	IP    string   `json:"ip"`    // on the bridge
	Roles []string `json:"roles"` // in the inventory
	Dir   string   `json:"dir"`   // upper, work, root (the overlay) and console.log
	// Cgroups are the machine's own cgroup directories, one per hierarchy
	// systemd-nspawn uses; every process of the machine lives below them.
	Cgroups []string `json:"cgroups"`
	// Controllers are the machine's own cgroups in the cgroup v1
	// controller hierarchies (memory, cpuset, ...). The machine starts in
	// them, so in its cgroup namespace they are the roots it sees at
	// /sys/fs/cgroup/<controller>; systemd-nspawn mounts those read-only
	// and the unit lab-cgroups makes them writable at boot, as on a real
	// machine: a Nomad client cannot start without creating its cgroups.
	Controllers []Controller `json:"controllers,omitempty"`
	// Shared are host directories bound read-only at the same path.
	Shared []string `json:"shared,omitempty"`
	// Volume is the machine's data volume: a loop device over
	// volume.img in Dir (Down finds it by that file).
	Volume string `json:"volume,omitempty"`
	// PublicIP is a client's address on the public bridge (Config.Public),
	// on the guest's interface pub0; PublicVeth is the host end of that
	// veth, which systemd-nspawn creates and the supervisor attaches.
	PublicIP   string `json:"public_ip,omitempty"`
	PublicVeth string `json:"public_veth,omitempty"`
	// Supervisor restarts systemd-nspawn when the guest reboots (exit 133).
	// SupervisorStart (clock ticks since boot) guards against pid reuse.
	Supervisor      int    `json:"supervisor_pid,omitempty"`
	SupervisorStart uint64 `json:"supervisor_start,omitempty"`
}

// Root is the machine's root directory as the host sees it.
func (m Machine) Root() string { return filepath.Join(m.Dir, "root") }

// stateFile is the state's name in the lab directory.
const stateFile = "state.json"

const hostOctet, outsideOctet, firstMachineOctet = 1, 2, 10

// publicIf is a client's public interface in the guest.
const publicIf = "pub0"

// Available reports why the lab cannot run here, or nil: it needs root,
// systemd-nspawn, debootstrap, nsenter, ip and overlayfs.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("the lab needs root (mounts, bridges, cgroups, systemd-nspawn)")
	}
	for _, b := range []string{"systemd-nspawn", "debootstrap", "nsenter", "ip", "systemctl"} {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s not found: apt-get install systemd-container debootstrap (make tools does)", b)
		}
	}
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil || !strings.Contains(string(fs), "\toverlay\n") {
		return errors.New("the kernel has no overlay filesystem")
	}
	return nil
}

// Up builds (or reuses) the rootfs, creates the bridge and boots every
// machine, and returns once each runs systemd and answers SSH. It writes
// inventory.json and lab.hcl into Dir. On error the caller runs Down.
func Up(ctx context.Context, cfg Config) (*State, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.Name == "" || len(cfg.Name) > 6 || strings.ContainsAny(cfg.Name, "/ .") {
		return nil, fmt.Errorf("lab name %q: want 1 to 6 letters or digits", cfg.Name)
	}
	if cfg.Net < 0 || cfg.Net > 255 {
		return nil, fmt.Errorf("lab net %d: want 0..255", cfg.Net)
	}
	if len(cfg.Nodes) == 0 || len(cfg.Nodes) > 200 {
		return nil, fmt.Errorf("lab: %d machines; want 1..200", len(cfg.Nodes))
	}
	for _, v := range cfg.DataVolumes {
		if !slices.ContainsFunc(cfg.Nodes, func(n Node) bool { return n.Name == v }) {
			return nil, fmt.Errorf("lab: a data volume for %q, which is not one of the machines", v)
		}
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("lab dir: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
		return nil, fmt.Errorf("a lab is already up in %s: run lab down first", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lab dir: %w", err)
	}
	if cfg.CacheDir == "" {
		if cfg.CacheDir, err = DefaultCacheDir(); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	rootfs, err := Rootfs(ctx, cfg.CacheDir, cfg.Mirror, cfg.Log)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Log, "lab: rootfs %s ready in %s\n", rootfs, time.Since(start).Round(time.Second))
	key, pub, err := labKey(filepath.Join(dir, "ssh"))
	if err != nil {
		return nil, err
	}

	cg, err := cgroupRoots()
	if err != nil {
		return nil, err
	}
	ctrls, err := controllerRoots()
	if err != nil {
		return nil, err
	}
	st := newState(cfg, dir, rootfs, key, cg, ctrls)
	if cfg.Owner > 0 {
		st.Owner = cfg.Owner
		if st.OwnerStart, err = startTime(cfg.Owner); err != nil {
			return nil, fmt.Errorf("lab owner: %w", err)
		}
	}
	if err := downOrphan(ctx, cfg.Name, dir, cfg.Log); err != nil {
		return nil, err
	}
	// Checked before the state is written: Down would otherwise remove
	// another lab's bridge or namespace of the same name.
	if err := st.checkFree(); err != nil {
		if b, rerr := os.ReadFile(filepath.Join(registry, cfg.Name)); rerr == nil {
			err = fmt.Errorf("%w (the lab %s is in %s)", err, cfg.Name, strings.TrimSpace(string(b)))
		}
		return nil, err
	}
	// Recorded before anything is created: Down needs only this file.
	if err := st.save(); err != nil {
		return nil, err
	}
	if err := register(st); err != nil {
		return st, err
	}
	if err := createBridge(ctx, st.Bridge, st.HostCIDR); err != nil {
		return st, err
	}
	if cfg.Public {
		if err := createBridge(ctx, st.PublicBridge, st.PublicHostCIDR); err != nil {
			return st, err
		}
		if err := st.createOutside(ctx); err != nil {
			return st, err
		}
	}
	var shared []string
	if cfg.BinDir != "" {
		if shared, err = binDirs(cfg.BinDir); err != nil {
			return st, err
		}
	}
	keys := append([]string{pub}, cfg.AuthorizedKeys...)
	for i := range st.Machines {
		m := &st.Machines[i]
		m.Shared = shared
		if err := prepareMachine(st, *m, keys); err != nil {
			return st, err
		}
		if slices.Contains(cfg.DataVolumes, m.Name) {
			if m.Volume, err = attachVolume(ctx, *m); err != nil {
				return st, err
			}
		}
		if err := startMachine(m, st.Bridge, st.PublicBridge); err != nil {
			return st, err
		}
		if err := st.save(); err != nil {
			return st, err
		}
	}
	for _, m := range st.Machines {
		if err := WaitReady(ctx, m, 2*time.Minute); err != nil {
			return st, err
		}
	}
	fmt.Fprintf(cfg.Log, "lab: %d machines running in %s\n", len(st.Machines), time.Since(start).Round(time.Second))
	if err := st.writeInventory(); err != nil {
		return st, err
	}
	if err := st.writeConfig(cfg.BinDir); err != nil {
		return st, err
	}
	return st, nil
}

// newState lays the lab out: names, addresses and cgroups, nothing created.
func newState(cfg Config, dir, rootfs, key string, cgroupRoots []string, ctrls []Controller) *State {
	st := &State{
		Name:     cfg.Name,
		Dir:      dir,
		Bridge:   "bl-" + cfg.Name,
		HostCIDR: fmt.Sprintf("10.213.%d.%d/24", cfg.Net, hostOctet),
		Rootfs:   rootfs,
		KeyFile:  key,
	}
	if cfg.Public {
		st.PublicBridge = "bp-" + cfg.Name
		st.PublicHostCIDR = fmt.Sprintf("10.214.%d.%d/24", cfg.Net, hostOctet)
		st.OutsideNetns = "lab-" + cfg.Name + "-out"
		st.OutsideVeth = "vo-" + cfg.Name
		st.OutsideIP = fmt.Sprintf("10.214.%d.%d", cfg.Net, outsideOctet)
	}
	for i, n := range cfg.Nodes {
		unit := cfg.Name + "-" + n.Name
		var cgs []string
		for _, r := range cgroupRoots {
			cgs = append(cgs, filepath.Join(r, "bootstrap-lab", unit))
		}
		var cs []Controller
		for _, c := range ctrls {
			cs = append(cs, Controller{Name: c.Name, Dir: filepath.Join(c.Dir, "bootstrap-lab", unit)})
		}
		m := Machine{
			Name:        n.Name,
			Unit:        unit,
			IP:          fmt.Sprintf("10.213.%d.%d", cfg.Net, firstMachineOctet+i),
			Roles:       n.Roles,
			Dir:         filepath.Join(dir, "machines", n.Name),
			Cgroups:     cgs,
			Controllers: cs,
		}
		if cfg.Public && slices.Contains(n.Roles, inventory.RoleClient) {
			m.PublicIP = fmt.Sprintf("10.214.%d.%d", cfg.Net, firstMachineOctet+i)
			// At most 12 characters (interface names have 15), and
			// unique on the box: the lab's name is, and the index
			// after the last dash cannot be part of it.
			m.PublicVeth = fmt.Sprintf("vp%s-%d", cfg.Name, i)
		}
		st.Machines = append(st.Machines, m)
	}
	return st
}

// checkFree fails if a link or network namespace the lab would create
// already exists.
func (st *State) checkFree() error {
	links := []string{st.Bridge, st.PublicBridge, st.OutsideVeth}
	for _, m := range st.Machines {
		links = append(links, m.PublicVeth)
	}
	for _, l := range links {
		if l == "" {
			continue
		}
		if _, err := net.InterfaceByName(l); err == nil {
			return fmt.Errorf("lab: link %s already exists: another lab of this name runs, or run lab down", l)
		}
	}
	if st.OutsideNetns != "" {
		if _, err := os.Stat(netnsFile(st.OutsideNetns)); err == nil {
			return fmt.Errorf("lab: network namespace %s already exists: another lab of this name runs, or run lab down", st.OutsideNetns)
		}
	}
	return nil
}

// Load reads the state of the lab in dir.
func Load(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("lab state: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("lab state %s: %w", filepath.Join(dir, stateFile), err)
	}
	return &st, nil
}

func (st *State) save() error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFile(filepath.Join(st.Dir, stateFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("lab state: %w", err)
	}
	return nil
}

// Machine returns the named machine.
func (st *State) Machine(name string) (Machine, bool) {
	for _, m := range st.Machines {
		if m.Name == name {
			return m, true
		}
	}
	return Machine{}, false
}

// InventoryFile and ConfigFile are written by Up into the lab directory.
func (st *State) InventoryFile() string { return filepath.Join(st.Dir, "inventory.json") }
func (st *State) ConfigFile() string    { return filepath.Join(st.Dir, "lab.hcl") }

// Inventory is the lab in the inventory contract: every machine reached as
// root with the lab's key on its bridge address, a client of a public lab
// on its public address (inventory.Node.APIAddress prefers it).
func (st *State) Inventory() *inventory.Inventory {
	inv := &inventory.Inventory{Version: inventory.Version}
	for _, m := range st.Machines {
		inv.Nodes = append(inv.Nodes, inventory.Node{
			Name:       m.Name,
			Roles:      m.Roles,
			PublicIP:   m.PublicIP,
			PrivateIP:  m.IP,
			SSH:        inventory.SSH{User: "root", Port: 22, PrivateKeyFile: st.KeyFile},
			DataDevice: m.Volume,
		})
	}
	return inv
}

func (st *State) writeInventory() error {
	b, err := json.MarshalIndent(st.Inventory(), "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFile(st.InventoryFile(), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("lab inventory: %w", err)
	}
	return nil
}

// writeConfig writes a static-provider configuration for the lab: systemd
// units, binaries copied from binDir over SSH, and platform jobs on the
// raw_exec driver with the binaries of binDir, which the machines share
// (they have no Docker engine, and the exec driver's chroot holds no
// binaries of ours).
func (st *State) writeConfig(binDir string) error {
	var b strings.Builder
	b.WriteString("# Written by the machine lab (internal/lab): bootstrap up -c " + st.ConfigFile() + "\n")
	b.WriteString("provider \"static\" {\n")
	fmt.Fprintf(&b, "  inventory       = %q\n", st.InventoryFile())
	b.WriteString("  service_manager = \"systemd\"\n  install_method  = \"binary\"\n")
	if binDir != "" {
		fmt.Fprintf(&b, "  bin_dir         = %q\n", binDir)
	}
	b.WriteString("}\n\njobs {\n  driver = \"raw_exec\"\n}\n")
	if st.PublicBridge != "" {
		// As on a cloud: prod's applications on the clients' public
		// addresses, which the outside network namespace reaches.
		b.WriteString("\ningress {\n  namespace = \"prod\"\n}\n")
	}
	if err := fsutil.WriteFile(st.ConfigFile(), []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("lab config: %w", err)
	}
	return nil
}

// binDirs returns dir and every directory the symlinks in it lead
// through, hop by hop (make tools links ./bin into its cache).
func binDirs(dir string) ([]string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{dir: true}
	out := []string{dir}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("lab bin dir: %w", err)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		for hop := 0; hop < 40; hop++ {
			target, err := os.Readlink(p)
			if err != nil {
				break // not a symlink: the end of the chain
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(p), target)
			}
			p = filepath.Clean(target)
			d := p
			if fi, err := os.Lstat(p); err == nil && !fi.IsDir() {
				d = filepath.Dir(p)
			}
			if !seen[d] && !systemDir(d) {
				seen[d] = true
				out = append(out, d)
			}
		}
	}
	return out, nil
}

// systemDir reports whether d is where a machine keeps its own programs
// (bin/terraform links into /usr/local/bin): bound from the host it would
// hide the machine's own, and the roles install binaries there.
func systemDir(d string) bool {
	for _, p := range []string{"/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/opt", "/var", "/srv"} {
		if d == p || strings.HasPrefix(d, p+"/") {
			return true
		}
	}
	return false
}

// labKey returns the lab's SSH key pair in dir (0700; the private key
// 0600), creating it once: the private key file and the public key line.
func labKey(dir string) (string, string, error) {
	priv := filepath.Join(dir, "id_ed25519")
	if b, err := os.ReadFile(priv + ".pub"); err == nil {
		if _, err := os.Stat(priv); err == nil {
			return priv, strings.TrimSpace(string(b)), nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("lab key: %w", err)
	}
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("lab key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(k, "bootstrap lab")
	if err != nil {
		return "", "", fmt.Errorf("lab key: %w", err)
	}
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		return "", "", fmt.Errorf("lab key: %w", err)
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))) + " bootstrap-lab"
	if err := fsutil.WriteFile(priv, pem.EncodeToMemory(block), 0o600); err != nil {
		return "", "", fmt.Errorf("lab key: %w", err)
	}
	if err := fsutil.WriteFile(priv+".pub", []byte(pub+"\n"), 0o644); err != nil {
		return "", "", fmt.Errorf("lab key: %w", err)
	}
	return priv, pub, nil
}

// cgroupRoots are the mounted hierarchies systemd-nspawn places a machine
// in: the named systemd hierarchy (cgroup v1 hybrid) and/or the unified one.
func cgroupRoots() ([]string, error) {
	var roots []string
	for _, d := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		var fs syscall.Statfs_t
		if err := syscall.Statfs(d, &fs); err != nil {
			continue
		}
		const cgroupSuper, cgroup2Super = 0x27e0eb, 0x63677270
		if fs.Type == cgroupSuper || fs.Type == cgroup2Super {
			roots = append(roots, d)
		}
	}
	if len(roots) == 0 {
		return nil, errors.New("lab: no cgroup hierarchy for systemd found under /sys/fs/cgroup")
	}
	return roots, nil
}

// Controller is a machine's cgroup in one cgroup v1 controller hierarchy.
type Controller struct {
	Name string `json:"name"` // as mounted under /sys/fs/cgroup
	Dir  string `json:"dir"`
}

// controllerRoots returns the cgroup v1 controller hierarchies and, in
// each, this process's own cgroup: the machines' cgroups go below it, so
// they stay within whatever limits this process runs under.
func controllerRoots() ([]Controller, error) {
	own := map[string]string{}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			own[c] = f[2]
		}
	}
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	var out []Controller
	for _, e := range ents {
		name := e.Name()
		path, ok := own[name]
		if !ok || name == "systemd" || name == "unified" {
			continue
		}
		d := filepath.Join("/sys/fs/cgroup", name)
		var fs syscall.Statfs_t
		if err := syscall.Statfs(d, &fs); err != nil || fs.Type != 0x27e0eb {
			continue
		}
		out = append(out, Controller{Name: name, Dir: filepath.Join(d, path)})
	}
	return out, nil
}

// makeControllerCgroup creates a machine's cgroup in a controller
// hierarchy. A new cpuset cgroup has no CPUs or memory nodes, and no
// process may join it until it is given its parent's.
func makeControllerCgroup(c Controller) error {
	parent := filepath.Dir(filepath.Dir(c.Dir))
	for _, d := range []string{filepath.Dir(c.Dir), c.Dir} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		if c.Name == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				cur, _ := os.ReadFile(filepath.Join(d, f))
				if strings.TrimSpace(string(cur)) != "" {
					continue
				}
				v, err := os.ReadFile(filepath.Join(parent, f))
				if err != nil {
					return fmt.Errorf("cgroup %s: %w", d, err)
				}
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup %s: %w", d, err)
				}
			}
		}
		parent = d
	}
	return nil
}

func createBridge(ctx context.Context, name, cidr string) error {
	if _, err := net.InterfaceByName(name); err == nil {
		return fmt.Errorf("lab bridge %s already exists: another lab of this name runs, or run lab down", name)
	}
	for _, args := range [][]string{
		{"link", "add", name, "type", "bridge"},
		{"addr", "add", cidr, "dev", name},
		{"link", "set", name, "up"},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			return fmt.Errorf("lab bridge: %w", err)
		}
	}
	return nil
}

// netnsFile is where `ip netns add` keeps a named network namespace.
func netnsFile(name string) string { return filepath.Join("/run/netns", name) }

// createOutside creates the outside network namespace on the public
// bridge: only the public network is on its link, and it has no default
// route and no route to the private one, as a user on the Internet.
func (st *State) createOutside(ctx context.Context) error {
	_, ipnet, err := net.ParseCIDR(st.PublicHostCIDR)
	if err != nil {
		return fmt.Errorf("lab outside: %w", err)
	}
	ones, _ := ipnet.Mask.Size()
	ns := st.OutsideNetns
	for _, args := range [][]string{
		{"netns", "add", ns},
		// The namespace's end is created in it: nothing of it on the host
		// but the bridge's port.
		{"link", "add", st.OutsideVeth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", st.OutsideVeth, "master", st.PublicBridge, "up"},
		{"-n", ns, "addr", "add", fmt.Sprintf("%s/%d", st.OutsideIP, ones), "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if err := run(ctx, "ip", args...); err != nil {
			return fmt.Errorf("lab outside: %w", err)
		}
	}
	return nil
}

// Outside runs a command in the outside network namespace (Config.Public),
// where only the clients' public addresses and the host's are reachable,
// and returns its combined output.
func (st *State) Outside(ctx context.Context, args ...string) ([]byte, error) {
	if st.OutsideNetns == "" {
		return nil, errors.New("lab outside: the lab has no public network (Config.Public)")
	}
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", st.OutsideNetns}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("lab outside: %s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// OutsideGet fetches url from the outside network namespace with curl
// and returns the body; an HTTP error status is an error. Any certificate
// is taken (-k): the outside is whoever tries, and does not care whose CA
// signed what answers.
func (st *State) OutsideGet(ctx context.Context, url string) ([]byte, error) {
	return st.OutsideCurl(ctx, "-k", "--fail-with-body", url)
}

// OutsideCurl runs curl with args in the outside network namespace, as
// someone on the Internet would, and returns its output.
func (st *State) OutsideCurl(ctx context.Context, args ...string) ([]byte, error) {
	if st.OutsideNetns == "" {
		return nil, errors.New("lab outside: the lab has no public network (Config.Public)")
	}
	// No proxy: one from the environment would not be reachable from
	// outside, and would not be the Internet's path to the address.
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", st.OutsideNetns,
		"curl", "-sS", "-m", "5", "--noproxy", "*"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("lab outside: curl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// prepareMachine mounts the machine's overlay and writes what makes it
// itself: hostname, machine-id, its address, its SSH host key and root's
// authorized keys. Written through the overlay so that files keep the
// rootfs's owners and modes.
func prepareMachine(st *State, m Machine, keys []string) error {
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.MkdirAll(filepath.Join(m.Dir, d), 0o700); err != nil {
			return fmt.Errorf("machine %s: %w", m.Name, err)
		}
	}
	// The overlay's root takes the upper directory's mode and becomes the
	// machine's "/": at 0700 no service running as a user could work.
	if err := os.Chmod(filepath.Join(m.Dir, "upper"), 0o755); err != nil {
		return fmt.Errorf("machine %s: %w", m.Name, err)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", st.Rootfs, filepath.Join(m.Dir, "upper"), filepath.Join(m.Dir, "work"))
	if err := syscall.Mount("overlay", m.Root(), "overlay", 0, opts); err != nil {
		return fmt.Errorf("machine %s: mount overlay: %w", m.Name, err)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	_, hostKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(hostKey, "root@"+m.Name)
	if err != nil {
		return err
	}
	hs, err := ssh.NewSignerFromKey(hostKey)
	if err != nil {
		return err
	}
	_, ipnet, _ := net.ParseCIDR(st.HostCIDR)
	ones, _ := ipnet.Mask.Size()
	files := []struct {
		path string
		mode os.FileMode
		data string
	}{
		{"etc/hostname", 0o644, m.Name + "\n"},
		{"etc/hosts", 0o644, "127.0.0.1 localhost\n127.0.1.1 " + m.Name + "\n"},
		{"etc/machine-id", 0o444, hex.EncodeToString(id) + "\n"},
		{"etc/systemd/network/10-host0.network", 0o644, networkFile("host0", m.IP, ones)},
		{"etc/systemd/network/10-" + publicIf + ".network", 0o644, publicNetwork(m, st.PublicHostCIDR)},
		{"etc/ssh/ssh_host_ed25519_key", 0o600, string(pem.EncodeToMemory(block))},
		{"etc/ssh/ssh_host_ed25519_key.pub", 0o644, string(ssh.MarshalAuthorizedKey(hs.PublicKey()))},
		// Only the key written above exists; without this sshd would look
		// for RSA and ECDSA keys as well and log errors.
		{"etc/ssh/sshd_config.d/lab.conf", 0o644, "HostKey /etc/ssh/ssh_host_ed25519_key\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n"},
		{"root/.ssh/authorized_keys", 0o600, strings.Join(keys, "\n") + "\n"},
		{"etc/systemd/system/lab-cgroups.service", 0o644, cgroupsUnit(m)},
	}
	for _, f := range files {
		if f.data == "" {
			continue
		}
		p := filepath.Join(m.Root(), f.path)
		mode := os.FileMode(0o755)
		if strings.HasPrefix(f.path, "root/") {
			mode = 0o700
		}
		if err := os.MkdirAll(filepath.Dir(p), mode); err != nil {
			return fmt.Errorf("machine %s: %w", m.Name, err)
		}
		if err := os.WriteFile(p, []byte(f.data), f.mode); err != nil {
			return fmt.Errorf("machine %s: %w", m.Name, err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return fmt.Errorf("machine %s: %w", m.Name, err)
		}
	}
	wants := filepath.Join(m.Root(), "etc/systemd/system/sysinit.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return fmt.Errorf("machine %s: %w", m.Name, err)
	}
	if err := os.Symlink("/etc/systemd/system/lab-cgroups.service", filepath.Join(wants, "lab-cgroups.service")); err != nil {
		return fmt.Errorf("machine %s: %w", m.Name, err)
	}
	return nil
}

// publicNetwork configures a client's public interface, on the network of
// the host's public address, or is empty for a machine with no public
// address. No gateway: the lab has no Internet, and replies go back on the
// link.
func publicNetwork(m Machine, hostCIDR string) string {
	_, ipnet, err := net.ParseCIDR(hostCIDR)
	if m.PublicIP == "" || err != nil {
		return ""
	}
	ones, _ := ipnet.Mask.Size()
	return networkFile(publicIf, m.PublicIP, ones)
}

// networkFile is a systemd-networkd file giving the guest's interface its
// static address, with nothing learnt from the link.
func networkFile(ifname, ip string, ones int) string {
	return fmt.Sprintf("[Match]\nName=%s\n\n[Network]\nAddress=%s/%d\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n", ifname, ip, ones)
}

// cgroupsUnit remounts the machine's controller hierarchies writable (see
// Machine.Controllers) before anything else starts.
func cgroupsUnit(m Machine) string {
	var mounts []string
	for _, c := range m.Controllers {
		mounts = append(mounts, "ExecStart=/bin/mount -o remount,bind,rw /sys/fs/cgroup/"+c.Name)
	}
	return "[Unit]\nDescription=Writable cgroup controllers (delegated by the lab's host)\n" +
		"DefaultDependencies=no\nBefore=sysinit.target\n\n" +
		"[Service]\nType=oneshot\nRemainAfterExit=yes\n" + strings.Join(mounts, "\n") + "\n"
}

// supervisor moves itself into the machine's cgroups (so that nspawn's
// payload/ and supervisor/ cgroups are the machine's own) and runs
// systemd-nspawn, again whenever the guest reboots: nspawn exits 133 then.
// Any other exit (poweroff, kill -TERM of nspawn, failure) ends it.
//
// systemd-nspawn creates a client's public veth (--network-veth-extra)
// anew at each boot, and deletes it when it exits, but leaves its host end
// down and on no bridge: before each run a watcher waits for it and puts it
// on the public bridge. The watcher ends when that is done, when the
// supervisor is gone, or after two minutes (nspawn failed to start).
const supervisor = `for cg in $LAB_CGROUPS; do echo $$ > "$cg/cgroup.procs" || exit 1; done
while :; do
  if [ -n "$LAB_PUBLIC_VETH" ]; then
    (
      i=0
      until ip link set "$LAB_PUBLIC_VETH" master "$LAB_PUBLIC_BRIDGE" up 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt 2400 ] || ! kill -0 $$ 2>/dev/null; then
          echo "lab: $LAB_PUBLIC_VETH not attached to $LAB_PUBLIC_BRIDGE"
          exit 1
        fi
        sleep 0.05
      done
    ) &
  fi
  "$@"; rc=$?
  echo "lab: systemd-nspawn exited $rc"
  [ "$rc" -eq 133 ] || exit "$rc"
done`

func startMachine(m *Machine, bridge, publicBridge string) error {
	for _, cg := range m.Cgroups {
		if err := os.MkdirAll(cg, 0o755); err != nil {
			return fmt.Errorf("machine %s: cgroup: %w", m.Name, err)
		}
	}
	join := m.Cgroups
	for _, c := range m.Controllers {
		if err := makeControllerCgroup(c); err != nil {
			return fmt.Errorf("machine %s: %w", m.Name, err)
		}
		join = append(join, c.Dir)
	}
	console, err := os.OpenFile(filepath.Join(m.Dir, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("machine %s: %w", m.Name, err)
	}
	defer console.Close()
	cmd := exec.Command("sh", "-c", supervisor, "lab-supervisor",
		"systemd-nspawn", "-D", m.Root(), "--boot", "--machine="+m.Unit, "--hostname="+m.Name,
		"--register=no", "--keep-unit", "--network-bridge="+bridge,
		"--resolv-conf=off", "--console=passive",
		// As on a real machine: runc (Nomad's exec driver) joins a session
		// keyring, which nspawn's default system call filter refuses.
		"--system-call-filter=@keyring")
	for _, d := range m.Shared {
		cmd.Args = append(cmd.Args, "--bind-ro="+d)
	}
	if m.Volume != "" {
		cmd.Args = append(cmd.Args, "--bind="+m.Volume)
	}
	cmd.Env = append(os.Environ(), "LAB_CGROUPS="+strings.Join(join, " "))
	if m.PublicVeth != "" {
		cmd.Args = append(cmd.Args, "--network-veth-extra="+m.PublicVeth+":"+publicIf)
		cmd.Env = append(cmd.Env, "LAB_PUBLIC_VETH="+m.PublicVeth, "LAB_PUBLIC_BRIDGE="+publicBridge)
	}
	cmd.Stdout, cmd.Stderr = console, console
	// Its own session: the machine outlives `lab up` and a terminal's ^C.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("machine %s: start systemd-nspawn: %w", m.Name, err)
	}
	m.Supervisor = cmd.Process.Pid
	m.SupervisorStart, _ = startTime(m.Supervisor)
	// Not waited for here: Down reaps it when this process is its parent.
	cmd.Process.Release()
	return nil
}

// attachVolume makes the machine's data volume: a blank sparse file on a
// free loop device.
func attachVolume(ctx context.Context, m Machine) (string, error) {
	img := m.volumeFile()
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", fmt.Errorf("machine %s: data volume: %w", m.Name, err)
	}
	err = f.Truncate(DataVolumeMB << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("machine %s: data volume: %w", m.Name, err)
	}
	out, err := exec.CommandContext(ctx, "losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("machine %s: losetup %s: %v: %s", m.Name, img, err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

func (m Machine) volumeFile() string { return filepath.Join(m.Dir, "volume.img") }

// PullPlug cuts a machine's power: its PID 1 gets SIGKILL from the host,
// which ends every process of the machine at once, with no shutdown (what
// the guest wrote is kept: it is in the host's page cache). systemd-nspawn
// and its supervisor exit; PowerOn boots it again. A graceful poweroff
// depends on every unit stopping in time, which a loaded host cannot
// promise; a power cut does not.
func (st *State) PullPlug(ctx context.Context, name string) error {
	m, ok := st.Machine(name)
	if !ok {
		return fmt.Errorf("lab: no machine %s", name)
	}
	init, err := Init(m)
	if err != nil {
		return err
	}
	if err := syscall.Kill(init, syscall.SIGKILL); err != nil {
		return fmt.Errorf("machine %s: kill its init (pid %d): %w", name, init, err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		// A task in a frozen cgroup v1 freezer (Nomad freezes a task's
		// cgroup to kill it) dies only once thawed.
		thaw(m)
		left := cgroupPids(m.allCgroups())
		if len(left) == 0 && !supervisorAlive(m) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("machine %s: processes %v still run after its power was cut", name, left)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// thaw thaws the machine's frozen cgroups in the cgroup v1 freezer.
func thaw(m Machine) {
	for _, c := range m.Controllers {
		if c.Name != "freezer" {
			continue
		}
		filepath.WalkDir(c.Dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.Name() != "freezer.state" {
				return nil
			}
			if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) != "THAWED" {
				os.WriteFile(p, []byte("THAWED"), 0o644)
			}
			return nil
		})
	}
}

// PowerOn boots a machine that was powered off (`systemctl poweroff`
// inside, or PullPlug: systemd-nspawn exited and its supervisor with it)
// from the overlay it had, as a machine's power button would, and waits
// until it is ready. The state records its new supervisor.
func (st *State) PowerOn(ctx context.Context, name string) error {
	i := slices.IndexFunc(st.Machines, func(m Machine) bool { return m.Name == name })
	if i < 0 {
		return fmt.Errorf("lab: no machine %s", name)
	}
	m := &st.Machines[i]
	if supervisorAlive(*m) {
		return fmt.Errorf("machine %s is running", name)
	}
	if err := startMachine(m, st.Bridge, st.PublicBridge); err != nil {
		return err
	}
	if err := st.save(); err != nil {
		return err
	}
	return WaitReady(ctx, *m, 2*time.Minute)
}

// WaitReady waits until the machine's systemd says running and its sshd
// answers on the bridge, and on its public address if it has one.
func WaitReady(ctx context.Context, m Machine, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last string
	for {
		out, err := Exec(ctx, m, "systemctl", "is-system-running")
		last = strings.TrimSpace(string(out))
		if err == nil && last == "running" {
			err := sshBanner(ctx, m.IP)
			if err == nil && m.PublicIP != "" {
				err = sshBanner(ctx, m.PublicIP)
			}
			if err == nil {
				return nil
			}
			last = err.Error()
		} else if err != nil && last == "" {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			failed, _ := Exec(context.Background(), m, "systemctl", "--failed", "--no-legend")
			return fmt.Errorf("machine %s not ready after %s (last: %s; failed units: %s; console: %s)",
				m.Name, timeout, last, strings.TrimSpace(string(failed)), filepath.Join(m.Dir, "console.log"))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func sshBanner(ctx context.Context, ip string) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip, "22"))
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 8)
	if _, err := io.ReadFull(c, b); err != nil {
		return fmt.Errorf("ssh banner: %w", err)
	}
	if !strings.HasPrefix(string(b), "SSH-2.0") {
		return fmt.Errorf("ssh banner: got %q", b)
	}
	return nil
}

// Exec runs a command inside the machine (all of its namespaces) and
// returns its combined output.
func Exec(ctx context.Context, m Machine, args ...string) ([]byte, error) {
	pid, err := Init(m)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", fmt.Sprint(pid), "-a", "--"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("machine %s: %s: %w", m.Name, strings.Join(args, " "), err)
	}
	return out, nil
}

// Init returns the host pid of the machine's PID 1 (systemd): the child of
// the running systemd-nspawn.
func Init(m Machine) (int, error) {
	ns, err := Nspawn(m)
	if err != nil {
		return 0, err
	}
	kids := children(ns)
	if len(kids) != 1 {
		return 0, fmt.Errorf("machine %s: systemd-nspawn (pid %d) has %d children, want its init", m.Name, ns, len(kids))
	}
	return kids[0], nil
}

// Nspawn returns the pid of the machine's running systemd-nspawn: the
// supervisor's child (its other child, if any, is the public veth's
// watcher).
func Nspawn(m Machine) (int, error) {
	if !supervisorAlive(m) {
		return 0, fmt.Errorf("machine %s is not running (its supervisor is gone; see %s)", m.Name, filepath.Join(m.Dir, "console.log"))
	}
	var ns []int
	for _, pid := range children(m.Supervisor) {
		if comm(pid) == "systemd-nspawn" {
			ns = append(ns, pid)
		}
	}
	if len(ns) != 1 {
		return 0, fmt.Errorf("machine %s: not booted (supervisor pid %d runs %d systemd-nspawn)", m.Name, m.Supervisor, len(ns))
	}
	return ns[0], nil
}

// registry names the directory of each lab that runs on this box, by lab
// name: how Up finds a lab a killed test left. Under /run, as the links and
// machines it points at, it does not outlive a reboot.
const registry = "/run/bootstrap-lab"

func register(st *State) error {
	if err := os.MkdirAll(registry, 0o700); err != nil {
		return fmt.Errorf("lab registry: %w", err)
	}
	return fsutil.WriteFile(filepath.Join(registry, st.Name), []byte(st.Dir+"\n"), 0o600)
}

// unregister forgets the lab of st, unless another lab of its name has
// taken its place.
func unregister(st *State) {
	f := filepath.Join(registry, st.Name)
	if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) == st.Dir {
		os.Remove(f)
	}
}

// downOrphan takes down the lab registered under name when its owner is
// gone (see Config.Owner). A lab with no owner, or whose owner runs, is
// left alone: checkFree then says it is in the way.
func downOrphan(ctx context.Context, name, dir string, log io.Writer) error {
	b, err := os.ReadFile(filepath.Join(registry, name))
	if err != nil {
		return nil
	}
	old := strings.TrimSpace(string(b))
	if old == dir {
		return nil
	}
	st, err := Load(old)
	if err != nil || st.Name != name || st.Owner <= 0 {
		return nil
	}
	if running(st.Owner, st.OwnerStart) {
		return nil
	}
	fmt.Fprintf(log, "lab: the lab %s in %s outlived its owner (pid %d): taking it down\n", name, old, st.Owner)
	if err := Down(ctx, old); err != nil {
		return fmt.Errorf("lab %s in %s, left by pid %d: %w", name, old, st.Owner, err)
	}
	return nil
}

func supervisorAlive(m Machine) bool { return running(m.Supervisor, m.SupervisorStart) }

// running reports whether pid is still the process that started at start
// (clock ticks since boot): not a reused pid, nor a zombie.
func running(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	st, err := startTime(pid)
	return err == nil && st == start && !zombie(pid)
}

func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
