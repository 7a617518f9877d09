package ansible

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// fakeEnv makes the test binary act as ansible-playbook: it records its
// arguments, its ANSIBLE_* environment and the temporary directories' modes
// (they only exist while it runs) in the file the variable names.
const fakeEnv = "BOOTSTRAP_TEST_FAKE_ANSIBLE_PLAYBOOK"

type fakeRun struct {
	Args  []string
	Env   map[string]string
	Modes map[string]string // directory → its mode, or the error of stat
}

func TestMain(m *testing.M) {
	if out := os.Getenv(fakeEnv); out != "" {
		os.Exit(fakePlaybook(out))
	}
	os.Exit(m.Run())
}

func fakePlaybook(out string) int {
	run := fakeRun{Args: os.Args[1:], Env: map[string]string{}, Modes: map[string]string{}}
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "ANSIBLE_") {
			run.Env[k] = v
		}
	}
	for _, k := range []string{"ANSIBLE_LOCAL_TEMP", "ANSIBLE_REMOTE_TEMP"} {
		fi, err := os.Stat(run.Env[k])
		if err != nil {
			run.Modes[k] = err.Error()
			continue
		}
		run.Modes[k] = fi.Mode().String()
	}
	b, _ := json.Marshal(run)
	if err := os.WriteFile(out, b, 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func runFake(t *testing.T, r *Runner) fakeRun {
	t.Helper()
	out := filepath.Join(t.TempDir(), "run.json")
	t.Setenv(fakeEnv, out)
	r.Binary = os.Args[0]
	if err := r.Run(context.Background(), "site.yml", []string{"vault"}, []string{"server-1"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var run fakeRun
	if err := json.Unmarshal(b, &run); err != nil {
		t.Fatal(err)
	}
	return run
}

// Ansible writes the modules it runs to its temporary directories; a fixed
// path in a shared /tmp lets another user create it first and swap them.
// Every run gets fresh private ones, removed when it ends.
func TestRunPrivateTempDirs(t *testing.T) {
	// A user's setting must not bring a shared directory back.
	t.Setenv("ANSIBLE_REMOTE_TEMP", "/tmp/.ansible-shared")
	t.Setenv("ANSIBLE_LOCAL_TEMP", "/tmp/.ansible-shared-local")
	dir := t.TempDir()
	r := &Runner{Dir: dir, InventoryFile: filepath.Join(dir, "inventory-vault.json"), VarsFiles: []string{"/s/vars.json"}}
	first := runFake(t, r)

	// Local nodes: the machines' tasks are skipped by tag.
	wantArgs := []string{"-i", r.InventoryFile, "-e", "@/s/vars.json", "--tags", "vault", "--skip-tags", "machines", "--limit", "server-1", "site.yml"}
	if !slices.Equal(first.Args, wantArgs) {
		t.Errorf("args = %q, want %q", first.Args, wantArgs)
	}
	local, remote := first.Env["ANSIBLE_LOCAL_TEMP"], first.Env["ANSIBLE_REMOTE_TEMP"]
	for k, d := range map[string]string{"ANSIBLE_LOCAL_TEMP": local, "ANSIBLE_REMOTE_TEMP": remote} {
		if !filepath.IsAbs(d) || strings.Contains(d, ".ansible-shared") {
			t.Errorf("%s = %q, want a private absolute directory", k, d)
		}
		if m := first.Modes[k]; m != "drwx------" {
			t.Errorf("%s %s during the run: %s, want drwx------", k, d, m)
		}
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s %s outlived the run (%v)", k, d, err)
		}
	}
	if local == remote {
		t.Errorf("local and remote temporary directories are both %s", local)
	}
	if _, err := os.Stat(filepath.Dir(local)); !os.IsNotExist(err) {
		t.Errorf("the run's temporary directory %s outlived it (%v)", filepath.Dir(local), err)
	}

	r.SSH = true
	second := runFake(t, r)
	if second.Env["ANSIBLE_LOCAL_TEMP"] == local || second.Env["ANSIBLE_REMOTE_TEMP"] == remote {
		t.Errorf("two runs share a temporary directory: %v and %v", first.Env, second.Env)
	}
	if slices.Contains(second.Args, "--skip-tags") {
		t.Errorf("machines: args = %q, want no task skipped by tag", second.Args)
	}
}

// A run killed with SIGKILL cannot remove its temporary directories; the
// next run removes those whose process is gone, and only those.
func TestRunRemovesStaleTempDirs(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	dead, live := gone.Process.Pid, os.Getpid()
	stale := []string{
		filepath.Join(tmp, fmt.Sprintf("bootstrap-ssh-%d-1", dead)),
		filepath.Join(tmp, fmt.Sprintf("bootstrap-ansible-%d-2", dead)),
	}
	keep := []string{
		filepath.Join(tmp, fmt.Sprintf("bootstrap-ansible-%d-3", live)),
		filepath.Join(tmp, "bootstrap-ansible-x-4"),
		filepath.Join(tmp, "bootstrap-ansible-1234567"), // an older name, without a pid
	}
	for _, d := range append(slices.Clone(stale), keep...) {
		if err := os.MkdirAll(filepath.Join(d, "local"), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	runFake(t, &Runner{Dir: dir, InventoryFile: filepath.Join(dir, "inventory-vault.json")})
	for _, d := range stale {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s, left by a dead process, survived the next run (%v)", d, err)
		}
	}
	for _, d := range keep {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s was removed: %v", d, err)
		}
	}
}

// On machines reached over SSH the remote directory is on the machine: a
// per-run one in the remote user's ~/.ansible/tmp (0700), never /tmp.
func TestRunSSHRemoteTempInHome(t *testing.T) {
	dir := t.TempDir()
	r := &Runner{Dir: dir, InventoryFile: filepath.Join(dir, "inventory-vault.json"), SSH: true}
	first := runFake(t, r)
	remote := first.Env["ANSIBLE_REMOTE_TEMP"]
	if !strings.HasPrefix(remote, "~/.ansible/tmp/bootstrap-ansible-") {
		t.Errorf("ANSIBLE_REMOTE_TEMP = %q, want a per-run directory in ~/.ansible/tmp", remote)
	}
	if m := first.Modes["ANSIBLE_LOCAL_TEMP"]; m != "drwx------" {
		t.Errorf("ANSIBLE_LOCAL_TEMP during the run: %s, want drwx------", m)
	}
	if second := runFake(t, r); second.Env["ANSIBLE_REMOTE_TEMP"] == remote {
		t.Errorf("two runs share the remote directory %s", remote)
	}
}

// prepare tells the runner whether the hosts are reached over SSH.
func TestPrepareSSH(t *testing.T) {
	stateDir := t.TempDir()
	state, store, err := stages.OpenReadOnly(stateDir, secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		provider config.Provider
		node     inventory.Node
		ssh      bool
	}{
		{config.Provider{Type: "local", Local: &config.LocalProvider{}},
			inventory.Node{Name: "server-1", Roles: []string{"server"}, PrivateIP: "127.0.0.2", Local: &inventory.Local{Root: "/n", BinDir: "/b"}}, false},
		{config.Provider{Type: "static", Static: &config.StaticProvider{}},
			inventory.Node{Name: "server-1", Roles: []string{"server"}, PrivateIP: "10.0.0.1", SSH: inventory.SSH{User: "root", Port: 22}}, true},
	} {
		e := stages.NewEnv(&config.Platform{Dir: t.TempDir(), Provider: tc.provider}, stateDir, store, state, nil, nil)
		inv := &inventory.Inventory{Version: inventory.Version, Nodes: []inventory.Node{tc.node}}
		r, err := prepare(e, inv, "vault", BuildInventory(e, inv, nil), "")
		if err != nil {
			t.Fatal(err)
		}
		if r.SSH != tc.ssh {
			t.Errorf("%s provider: Runner.SSH = %v, want %v", tc.provider.Type, r.SSH, tc.ssh)
		}
	}
}

// A node's digest changes with what its play reads for it and nothing
// else: a new client or another node's token leaves it as it was, so up
// runs the roles on the nodes that changed only.
func TestNodeDigests(t *testing.T) {
	stateDir := t.TempDir()
	state, store, err := stages.OpenReadOnly(stateDir, secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	e := stages.NewEnv(&config.Platform{Dir: t.TempDir(), Provider: config.Provider{Type: "local", Local: &config.LocalProvider{}}}, stateDir, store, state, nil, nil)
	node := func(name, ip string, roles ...string) inventory.Node {
		return inventory.Node{Name: name, Roles: roles, PrivateIP: ip, Local: &inventory.Local{Root: "/n/" + name, BinDir: "/b"}}
	}
	digestsOf := func(nodes []inventory.Node, tokens map[string]string, gossip string) map[string]string {
		t.Helper()
		inv := &inventory.Inventory{Version: inventory.Version, Nodes: nodes}
		d, err := digests(e, inv, Play{
			Tag: "consul", Roles: []string{"common", "consul"}, Hosts: inventory.Names(nodes),
			Secrets: map[string]string{"gossip": gossip}, NodeSecrets: map[string]map[string]string{"tokens": tokens},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(d) != len(nodes) {
			t.Fatalf("%d digests for %d nodes", len(d), len(nodes))
		}
		return d
	}
	s1, c1, c2 := node("server-1", "127.0.1.1", "server"), node("client-1", "127.0.1.2", "client"), node("client-2", "127.0.1.3", "client")
	tokens := map[string]string{"server-1": "a", "client-1": "b"}
	base := digestsOf([]inventory.Node{s1, c1}, tokens, "k")
	if again := digestsOf([]inventory.Node{s1, c1}, tokens, "k"); !maps.Equal(again, base) {
		t.Error("the same inputs gave other digests")
	}

	// A new client with its own token: the others' digests stay.
	more := digestsOf([]inventory.Node{s1, c1, c2}, map[string]string{"server-1": "a", "client-1": "b", "client-2": "c"}, "k")
	if more["server-1"] != base["server-1"] || more["client-1"] != base["client-1"] {
		t.Error("adding client-2 changed the digests of server-1 or client-1")
	}
	// One node's token: that node only.
	if d := digestsOf([]inventory.Node{s1, c1}, map[string]string{"server-1": "a", "client-1": "new"}, "k"); d["server-1"] != base["server-1"] || d["client-1"] == base["client-1"] {
		t.Errorf("client-1's new token: server-1 changed %v, client-1 changed %v", d["server-1"] != base["server-1"], d["client-1"] != base["client-1"])
	}
	// A shared secret or a server's address: every node (retry_join lists
	// the servers).
	if d := digestsOf([]inventory.Node{s1, c1}, tokens, "k2"); d["server-1"] == base["server-1"] || d["client-1"] == base["client-1"] {
		t.Error("a new gossip key left a node's digest as it was")
	}
	moved := node("server-1", "127.0.1.9", "server")
	if d := digestsOf([]inventory.Node{moved, c1}, tokens, "k"); d["client-1"] == base["client-1"] {
		t.Error("a server's new address left client-1's digest as it was")
	}
}

// A new binary in bin_dir (make tools after a version bump) makes every
// node of the play pending, with a reason that names it: the plan tells an
// upgrade from other changes.
func TestPendingNamesNewBinaries(t *testing.T) {
	stateDir, binDir := t.TempDir(), t.TempDir()
	state, store, err := stages.OpenReadOnly(stateDir, secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	e := stages.NewEnv(&config.Platform{Dir: t.TempDir(), Provider: config.Provider{Type: "local", Local: &config.LocalProvider{}}}, stateDir, store, state, nil, nil)
	for name, content := range map[string]string{"consul-1": "one", "consul-2": "two!", "consul-template": "ct"} {
		if err := os.WriteFile(filepath.Join(binDir, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target string) {
		os.Remove(filepath.Join(binDir, "consul"))
		if err := os.Symlink(target, filepath.Join(binDir, "consul")); err != nil {
			t.Fatal(err)
		}
	}
	link("consul-1")
	inv := &inventory.Inventory{Version: inventory.Version, Nodes: []inventory.Node{
		{Name: "server-1", Roles: []string{"server"}, PrivateIP: "127.0.1.1", Local: &inventory.Local{Root: "/n/server-1", BinDir: binDir}},
		{Name: "client-1", Roles: []string{"client"}, PrivateIP: "127.0.1.2", Local: &inventory.Local{Root: "/n/client-1", BinDir: binDir}},
	}}
	p := Play{Tag: "consul", Roles: []string{"common", "consul_template", "consul"}}
	converged := func() {
		t.Helper()
		want, err := digests(e, inv, p)
		if err != nil {
			t.Fatal(err)
		}
		ai := p.inventory(e, inv)
		bins := map[string][]string{}
		for _, n := range inv.Nodes {
			bins[n.Name] = binaries(ai.Hosts[n.Name], p.Roles)
		}
		if err := record(e, p.Tag, want, bins); err != nil {
			t.Fatal(err)
		}
	}
	pending := func() map[string]string {
		t.Helper()
		got, err := Pending(e, inv, p)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	converged()
	if got := pending(); len(got) != 0 {
		t.Fatalf("after the converge: %v, want nothing pending", got)
	}
	link("consul-2")
	if got := pending(); len(got) != 2 || got["server-1"] != "new binaries: consul" || got["client-1"] != "new binaries: consul" {
		t.Errorf("consul linked to a new file: %v, want both nodes with \"new binaries: consul\"", got)
	}
	converged()
	if got := pending(); len(got) != 0 {
		t.Errorf("after the upgrade's converge: %v, want nothing pending", got)
	}
	p.Vars = map[string]any{"consul_dns": false}
	if got := pending(); got["server-1"] != "configuration or roles changed" {
		t.Errorf("a changed variable: %v, want \"configuration or roles changed\"", got)
	}
}

// A Consul setting changes the consul play's digests only: the vault and
// nomad roles do not run again for it. consul { ui } changes the servers'
// alone: the clients do not serve the UI.
func TestConsulSettingDigests(t *testing.T) {
	stateDir := t.TempDir()
	state, store, err := stages.OpenReadOnly(stateDir, secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Dir = t.TempDir()
	cfg.Provider = config.Provider{Type: "local", Local: &config.LocalProvider{}}
	e := stages.NewEnv(cfg, stateDir, store, state, nil, nil)
	inv := &inventory.Inventory{Version: inventory.Version, Nodes: []inventory.Node{
		{Name: "server-1", Roles: []string{"server", "vault"}, PrivateIP: "127.0.1.1", Local: &inventory.Local{Root: "/n/server-1", BinDir: "/b"}},
		{Name: "client-1", Roles: []string{"client"}, PrivateIP: "127.0.1.2", Local: &inventory.Local{Root: "/n/client-1", BinDir: "/b"}},
	}}
	// The plays as the stages make them, for the settings they read.
	plays := func() map[string]Play {
		vars, serverVars := ConsulVars(cfg)
		return map[string]Play{
			"vault":  {Tag: "vault", Roles: []string{"common", "vault"}, Hosts: []string{"server-1"}},
			"consul": {Tag: "consul", Roles: []string{"common", "consul_template", "consul"}, Vars: vars, ServerVars: serverVars},
			"nomad":  {Tag: "nomad", Roles: []string{"consul_template", "nomad"}},
		}
	}
	all := func() map[string]map[string]string {
		out := map[string]map[string]string{}
		for tag, p := range plays() {
			d, err := digests(e, inv, p)
			if err != nil {
				t.Fatal(err)
			}
			out[tag] = d
		}
		return out
	}
	for _, tc := range []struct {
		setting string
		change  func()
		nodes   []string // whose consul digest changes
	}{
		{"ui", func() { cfg.Consul.UI = !cfg.Consul.UI }, []string{"server-1"}},
		{"dns", func() { cfg.Consul.DNS = !cfg.Consul.DNS }, []string{"client-1", "server-1"}},
	} {
		before := all()
		tc.change()
		after := all()
		for tag, d := range before {
			var changed []string
			for _, node := range slices.Sorted(maps.Keys(d)) {
				if d[node] != after[tag][node] {
					changed = append(changed, node)
				}
			}
			want := []string(nil)
			if tag == "consul" {
				want = tc.nodes
			}
			if !slices.Equal(changed, want) {
				t.Errorf("consul { %s } changed: the %s play's digests changed on %v, want %v", tc.setting, tag, changed, want)
			}
		}
	}
}
