package terraform

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/internal/sshwait"
	"github.com/platform-bootstrap/bootstrap/internal/sshwait/sshdtest"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// These tests run the real terraform binary against modules in
// terraform/testdata whose providers (hashicorp/local, hashicorp/tls and the
// built-in terraform_data) work with no cloud and no network.

// syncBuffer collects Terraform's output; tfexec writes from two goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// randomPrefix returns the first three octets of a loopback /24 of the
// test's own.
func randomPrefix(t *testing.T) string {
	return strings.TrimSuffix(testcluster.NewSubnet(t).IP(1), ".1")
}

func testModule(t *testing.T, name string, vars map[string]cty.Value) (*config.TerraformProvider, string) {
	return &config.TerraformProvider{
		Module:     filepath.Join("terraform", "testdata", name),
		Vars:       vars,
		Binary:     testcluster.Bin(t, "terraform"),
		Backend:    "local",
		SSHTimeout: "1m",
	}, testcluster.RepoRoot()
}

func newRunner(t *testing.T, cfg *config.TerraformProvider, configDir, workDir string) (*Runner, *syncBuffer) {
	t.Helper()
	log := &syncBuffer{}
	r, err := New(cfg, configDir, workDir, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("terraform output:\n%s", log)
		}
	})
	return r, log
}

func localNodesVars(prefix, nodesDir string, servers, clients int) map[string]cty.Value {
	return map[string]cty.Value{
		"num_servers":    cty.NumberIntVal(int64(servers)),
		"num_clients":    cty.NumberIntVal(int64(clients)),
		"address_prefix": cty.StringVal(prefix),
		"nodes_dir":      cty.StringVal(nodesDir),
		// The provision stage passes the keys stage's public key to every
		// module; one that does not declare it must still work.
		"ssh_public_key": cty.StringVal("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJvb3RzdHJhcA test"),
	}
}

// nodeChanges are the resource changes one local-nodes node makes.
func nodeChanges(action reconcile.Action, names ...string) []stages.Change {
	var out []stages.Change
	for _, n := range names {
		for _, r := range []string{"local_file.node", "local_sensitive_file.host_key", "tls_private_key.host"} {
			out = append(out, stages.Change{Action: action, Target: fmt.Sprintf("%s[%q]", r, n)})
		}
	}
	return out
}

func sortChanges(c []stages.Change) []stages.Change {
	c = slices.Clone(c)
	slices.SortFunc(c, func(a, b stages.Change) int { return strings.Compare(a.String(), b.String()) })
	return c
}

func wantChanges(t *testing.T, got, want []stages.Change) {
	t.Helper()
	g, w := sortChanges(got), sortChanges(want)
	if !slices.Equal(g, w) {
		t.Fatalf("plan:\n got %v\nwant %v", g, w)
	}
}

// snapshot records every file under dir with its size, mode and mtime.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if !d.IsDir() {
			out[p] = fmt.Sprintf("%d %v %d", fi.Size(), fi.Mode(), fi.ModTime().UnixNano())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, k+" (new)")
		}
	}
	slices.Sort(d)
	return d
}

func TestLocalNodesLifecycle(t *testing.T) {
	needTerraform(t, "hashicorp/local", "hashicorp/tls")
	ctx := ctxFor(t)
	prefix := randomPrefix(t)
	nodesDir := t.TempDir()
	workDir := filepath.Join(t.TempDir(), "state", "terraform")
	cfg, configDir := testModule(t, "local-nodes", localNodesVars(prefix, nodesDir, 3, 2))
	r, _ := newRunner(t, cfg, configDir, workDir)

	// Before anything exists: every node is to be created.
	changes, err := r.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := nodeChanges("create", "server-1", "server-2", "server-3", "client-1", "client-2")
	want = append(want,
		stages.Change{Action: "create", Target: "terraform_data.network"},
		stages.Change{Action: "create", Target: "output bootstrap_inventory"})
	wantChanges(t, changes, want)
	if entries, _ := os.ReadDir(nodesDir); len(entries) != 0 {
		t.Fatalf("plan created machines: %v", entries)
	}

	inv, err := r.Apply(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Nodes) != 5 {
		t.Fatalf("inventory has %d nodes, want 5: %+v", len(inv.Nodes), inv.Nodes)
	}
	for i, n := range inv.Nodes {
		t.Logf("node %s roles %v ip %s", n.Name, n.Roles, n.PrivateIP)
		if n.SSH.User != "root" || n.SSH.Port != 22 {
			t.Errorf("node %s: ssh %+v, want root@:22", n.Name, n.SSH)
		}
		if !strings.HasPrefix(n.PrivateIP, prefix+".") {
			t.Errorf("node %s: address %s not in %s.0/24", n.Name, n.PrivateIP, prefix)
		}
		if _, err := os.Stat(filepath.Join(nodesDir, n.Name+".json")); err != nil {
			t.Errorf("node %d (%s) was not provisioned: %v", i, n.Name, err)
		}
	}
	if got := inventory.Names(inv.WithRole(inventory.RoleVault)); !slices.Equal(got, []string{"server-1"}) {
		t.Errorf("vault nodes = %v, want [server-1]", got)
	}
	if got := inventory.Names(inv.WithRole(inventory.RoleServer)); len(got) != 3 {
		t.Errorf("servers = %v", got)
	}
	if n, _ := inv.Node("client-2"); n.PrivateIP != prefix+".5" || !n.Has(inventory.RoleClient) {
		t.Errorf("client-2 = %+v", n)
	}

	// The state and the generated files live in the working directory.
	for _, f := range []string{"terraform.tfstate", VarsFile, BackendFile, "main.tf"} {
		fi, err := os.Stat(filepath.Join(workDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if f != "terraform.tfstate" && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}

	// Reading the outputs gives the same inventory without applying.
	again, err := r.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !inventory.Equal(inv, again) {
		t.Fatalf("Inventory() = %+v, Apply gave %+v", again, inv)
	}

	// A second run, as the next `bootstrap up` would do it: a new runner
	// plans no changes and writes nothing in the working directory.
	before := snapshot(t, workDir)
	r2, _ := newRunner(t, cfg, configDir, workDir)
	changes, err = r2.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 0 {
		t.Fatalf("second plan: %v, want no changes", changes)
	}
	if d := diffSnapshots(before, snapshot(t, workDir)); len(d) > 0 {
		t.Errorf("second plan wrote %v", d)
	}

	// Fewer clients: the plan names exactly what goes.
	cfg1, _ := testModule(t, "local-nodes", localNodesVars(prefix, nodesDir, 3, 1))
	r3, _ := newRunner(t, cfg1, configDir, workDir)
	changes, err = r3.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantChanges(t, changes, append(nodeChanges("delete", "client-2"),
		stages.Change{Action: "update", Target: "output bootstrap_inventory"}))

	// Destroy (with the configuration that created it) leaves nothing.
	if err := r2.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(nodesDir); len(entries) != 0 {
		t.Fatalf("destroy left machines behind: %v", entries)
	}
	left, err := r2.Resources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("state after destroy: %v", left)
	}
	// Destroying again is fine: there is nothing to destroy.
	if err := r2.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestResourcesListsWhatIsInTheState(t *testing.T) {
	needTerraform(t)
	ctx := ctxFor(t)
	cfg, configDir := testModule(t, "bad-inventory", map[string]cty.Value{"known": cty.False})
	r, _ := newRunner(t, cfg, configDir, t.TempDir())
	left, err := r.Resources(ctx)
	if err != nil || len(left) != 0 {
		t.Fatalf("before apply: %v, %v", left, err)
	}
	if _, err := r.Apply(ctx); err == nil {
		t.Fatal("apply of a module with a broken inventory succeeded")
	}
	left, err = r.Resources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(left, []string{"terraform_data.machine"}) {
		t.Fatalf("Resources() = %v, want [terraform_data.machine]", left)
	}
	if err := r.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestMalformedInventoryKnownAtPlan(t *testing.T) {
	needTerraform(t)
	ctx := ctxFor(t)
	cfg, configDir := testModule(t, "bad-inventory", map[string]cty.Value{"known": cty.True})
	r, _ := newRunner(t, cfg, configDir, t.TempDir())
	_, err := r.Plan(ctx)
	if err == nil {
		t.Fatal("plan accepted a module whose inventory breaks the contract")
	}
	t.Log(err)
	for _, want := range []string{
		"planned terraform output bootstrap_inventory of module",
		`node "Server_1": name "Server_1" must be lowercase`,
		`node "server-2": unknown role "database"`,
		"2 server node(s)",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q", want)
		}
	}
}

func TestMalformedInventoryAfterApply(t *testing.T) {
	needTerraform(t)
	ctx := ctxFor(t)
	cfg, configDir := testModule(t, "bad-inventory", map[string]cty.Value{"known": cty.False})
	r, _ := newRunner(t, cfg, configDir, t.TempDir())
	// The value is unknown until apply, so the plan cannot check it yet.
	changes, err := r.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantChanges(t, changes, []stages.Change{
		{Action: "create", Target: "terraform_data.machine"},
		{Action: "create", Target: "output bootstrap_inventory"},
	})
	_, applyErr := r.Apply(ctx)
	_, invErr := r.Inventory(ctx)
	for _, err := range []error{applyErr, invErr} {
		if err == nil {
			t.Fatal("a broken inventory was accepted")
		}
		if !strings.Contains(err.Error(), "terraform output bootstrap_inventory of module") ||
			!strings.Contains(err.Error(), `unknown role "database"`) {
			t.Errorf("unclear error: %v", err)
		}
	}
	if err := r.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestMissingInventoryOutput(t *testing.T) {
	needTerraform(t)
	ctx := ctxFor(t)
	cfg, configDir := testModule(t, "no-inventory", nil)
	r, _ := newRunner(t, cfg, configDir, t.TempDir())
	_, err := r.Plan(ctx)
	if err == nil || !strings.Contains(err.Error(), `has no output "bootstrap_inventory"`) {
		t.Fatalf("plan: %v", err)
	}
	// Before anything is applied there are no outputs at all.
	if _, err := r.Inventory(ctx); err == nil || !strings.Contains(err.Error(), `has no output "bootstrap_inventory"`) {
		t.Fatalf("Inventory: %v", err)
	}
}

func TestTerraformLogGoesToAFile(t *testing.T) {
	needTerraform(t)
	ctx := ctxFor(t)
	t.Setenv("TF_LOG", "DEBUG")
	t.Setenv("TF_LOG_PATH", "")
	cfg, configDir := testModule(t, "no-inventory", nil)
	dir := t.TempDir()
	r, log := newRunner(t, cfg, configDir, dir)
	if _, err := r.Resources(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "terraform-debug.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "[DEBUG]") {
		t.Fatalf("no debug lines in terraform-debug.log:\n%.500s", b)
	}
	if strings.Contains(log.String(), "[DEBUG]") {
		t.Fatal("debug lines in the streamed output")
	}
}

func sha256hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func randomSecret(t *testing.T) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "s3cret-" + hex.EncodeToString(b)
}

// grepTree fails the test when any file under dir contains secret.
func grepTree(t *testing.T, dir, secret string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return err
		}
		n++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s contains a credential from the environment", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestProvisionedNodesAnswerSSH is the provision stage's path end to end:
// Terraform creates the "machines" (each with its host key), each machine's
// sshd comes up with that key, and sshwait trusts exactly the keys
// Terraform generated.
func TestProvisionedNodesAnswerSSH(t *testing.T) {
	needTerraform(t, "hashicorp/local", "hashicorp/tls")
	sshdtest.Need(t)
	ctx := ctxFor(t)
	prefix := randomPrefix(t)
	port := sshdtest.FreePort(t, prefix+".1")
	nodesDir := t.TempDir()
	vars := localNodesVars(prefix, nodesDir, 1, 1)
	vars["ssh_port"] = cty.NumberIntVal(int64(port))
	cfg, configDir := testModule(t, "local-nodes", vars)
	r, _ := newRunner(t, cfg, configDir, t.TempDir())
	inv, err := r.Apply(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Destroy(context.Background()); err != nil {
			t.Error(err)
		}
	})

	// The host keys Terraform generated, from the fields beyond the contract.
	outs, err := r.tf.Output(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var doc string
	if err := json.Unmarshal(outs[OutputName].Value, &doc); err != nil {
		t.Fatal(err)
	}
	var extra struct {
		Nodes []struct {
			Name          string `json:"name"`
			HostPublicKey string `json:"host_public_key"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(doc), &extra); err != nil {
		t.Fatal(err)
	}

	client, _ := sshdtest.NewKey(t)
	var want []string
	for i := range inv.Nodes {
		n := &inv.Nodes[i]
		hostKey, err := os.ReadFile(filepath.Join(nodesDir, n.Name+".host_key"))
		if err != nil {
			t.Fatal(err)
		}
		s := sshdtest.Start(t, n.PrivateIP, n.SSH.Port, client.PublicKey(), hostKey)
		want = append(want, s.KnownHostsLine())
		for _, x := range extra.Nodes {
			if x.Name == n.Name && !strings.Contains(s.KnownHostsLine(), strings.TrimSpace(x.HostPublicKey)) {
				t.Fatalf("node %s serves a host key other than Terraform's", n.Name)
			}
		}
		n.SSH.User = sshdtest.User(t)
	}
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := sshwait.Wait(ctx, inv.Nodes, sshwait.Options{KnownHosts: kh, Signer: client, Timeout: time.Minute, Interval: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(kh)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(b)), "\n")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("known_hosts:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestApplyResumesAfterInterrupt stops an apply in the middle, gently
// (the run is cancelled: Terraform gets SIGINT) and hard (every process of
// the run is killed, as when the machine running bootstrap dies), and
// checks the next apply finishes the job and converges.
func TestApplyResumesAfterInterrupt(t *testing.T) {
	for _, hard := range []bool{false, true} {
		name := "cancel"
		if hard {
			name = "kill"
		}
		t.Run(name, func(t *testing.T) {
			needTerraform(t)
			marker := filepath.Join(t.TempDir(), "started")
			cfg, configDir := testModule(t, "slow", map[string]cty.Value{
				"marker":         cty.StringVal(marker),
				"address_prefix": cty.StringVal(randomPrefix(t)),
			})
			workDir := t.TempDir()
			r, _ := newRunner(t, cfg, configDir, workDir)
			// Whatever the interrupted run leaves running (the provisioner's
			// command) is stopped by pid; it runs in the working directory.
			t.Cleanup(func() {
				pids, _ := proc.Under(workDir)
				for _, pid := range pids {
					t.Errorf("process %d was left running by the interrupted apply", pid)
					proc.Kill(context.Background(), pid)
				}
			})

			ctx, cancel := context.WithCancel(ctxFor(t))
			defer cancel()
			done := make(chan error, 1)
			go func() {
				_, err := r.Apply(ctx)
				done <- err
			}()
			for {
				if _, err := os.Stat(marker); err == nil {
					break
				}
				select {
				case err := <-done:
					t.Fatalf("apply ended before the slow resource started: %v", err)
				case <-time.After(50 * time.Millisecond):
				}
			}
			if hard {
				pids, err := proc.Under(workDir)
				if err != nil {
					t.Fatal(err)
				}
				if len(pids) == 0 {
					t.Fatal("no terraform process found in the working directory")
				}
				for _, pid := range pids {
					if err := proc.Kill(context.Background(), pid); err != nil {
						t.Fatal(err)
					}
				}
			} else {
				cancel()
			}
			if err := <-done; err == nil {
				t.Fatal("the interrupted apply reported success")
			}

			// The next run, as a new bootstrap process would do it.
			r2, _ := newRunner(t, cfg, configDir, workDir)
			inv, err := r2.Apply(ctxFor(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(inv.Nodes) != 2 {
				t.Fatalf("inventory: %+v", inv.Nodes)
			}
			changes, err := r2.Plan(ctxFor(t))
			if err != nil {
				t.Fatal(err)
			}
			if len(changes) != 0 {
				t.Fatalf("plan after the resumed apply: %v", changes)
			}
			if err := r2.Destroy(ctxFor(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}
