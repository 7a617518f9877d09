package vault_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
)

// vaultHTTP is an HTTP client that trusts the bootstrap CA of Vault only.
func vaultHTTP(t *testing.T, p *platformtest.Platform) *http.Client {
	t.Helper()
	ca, err := os.ReadFile(filepath.Join(p.StateDir(), "tls", "vault", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// health asks a Vault node's sys/health over TLS with the bootstrap CA only.
func health(t *testing.T, p *platformtest.Platform, ip string) map[string]any {
	t.Helper()
	resp, err := vaultHTTP(t, p).Get("https://" + ip + ":8200/v1/sys/health?standbyok=true&uninitcode=200&sealedcode=200")
	if err != nil {
		t.Fatalf("vault health on %s: %v", ip, err)
	}
	defer resp.Body.Close()
	var h map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h
}

func assertUnsealed(t *testing.T, p *platformtest.Platform, ip string) {
	t.Helper()
	h := health(t, p, ip)
	if h["initialized"] != true || h["sealed"] != false {
		t.Fatalf("vault on %s: initialized=%v sealed=%v, want true/false", ip, h["initialized"], h["sealed"])
	}
}

// snapshot records the content of every file of the state directory that a
// converged run must not touch (logs and run history grow on every run).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		if strings.HasPrefix(rel, "logs/") || strings.HasPrefix(rel, "runs/") || rel == "lock" || strings.HasPrefix(rel, "nodes/") {
			return nil
		}
		b, _ := os.ReadFile(path)
		out[rel] = info.ModTime().String() + "\x00" + string(b)
		return nil
	})
	return out
}

// assertAuditLog checks the node's Vault audit log, in its own directory,
// mode 0600, and returns it.
func assertAuditLog(t *testing.T, p *platformtest.Platform, node string) string {
	t.Helper()
	log := filepath.Join(p.StateDir(), "nodes", node, "logs", "vault", "audit.log")
	fi, err := os.Stat(log)
	if err != nil {
		t.Fatalf("audit log of %s: %v", node, err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", fi.Mode().Perm())
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"type":"request"`) {
		t.Errorf("the audit log of %s records no request", node)
	}
	return string(b)
}

func TestVaultStage(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up a platform")
	}
	p := platformtest.New(t, "", "vault {\n  key_shares = 3\n  key_threshold = 2\n}\n")
	only := []string{"--only", "keys,provision,vault"}

	p.Up(only...)
	ip := p.Subnet.IP(1)
	assertUnsealed(t, p, ip)

	t.Run("second up changes nothing", func(t *testing.T) {
		p := p.T(t)
		before := snapshot(t, p.StateDir())
		r := p.Up(only...)
		if !strings.Contains(r.Stdout, "vault      unchanged") {
			t.Errorf("second up did not report vault unchanged:\n%s", r.Stdout)
		}
		after := snapshot(t, p.StateDir())
		for k, v := range before {
			if after[k] != v {
				t.Errorf("second up rewrote %s", k)
			}
		}
		if r := p.Run(append([]string{"plan"}, only...)); r.Code != 0 {
			t.Errorf("plan after up: exit %d, want 0\n%s", r.Code, r.Output())
		}
	})

	t.Run("every request is audited to the node's directory", func(t *testing.T) {
		p := p.T(t)
		b := assertAuditLog(t, p, "server-1")
		// The second up's plan listed the audit devices: audited, too.
		if !strings.Contains(b, `"path":"sys/audit"`) {
			t.Error("the audit log lacks the stage's own requests")
		}
		// No secret of the store in clear (Vault HMACs them).
		p.AssertNoSecrets(b)
	})

	t.Run("restarted vault is unsealed by up", func(t *testing.T) {
		p := p.T(t)
		pidfile := filepath.Join(p.StateDir(), "nodes", "server-1", "run", "vault.pid")
		pid, err := proc.ReadPidFile(pidfile)
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.Terminate(context.Background(), pid, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if r := p.Run(append([]string{"plan"}, only...)); r.Code != 4 || !strings.Contains(r.Stdout, "start vault on server-1") {
			t.Errorf("plan with vault stopped: exit %d, want 4 and a start\n%s", r.Code, r.Stdout)
		}
		p.Up(only...)
		assertUnsealed(t, p, ip)
	})

	t.Run("killed between unseal keys", func(t *testing.T) {
		p := p.T(t)
		// A sealed Vault (restarted), and the run dies after the first key
		// share: the next run resets the progress and unseals.
		pid, _ := proc.ReadPidFile(filepath.Join(p.StateDir(), "nodes", "server-1", "run", "vault.pid"))
		proc.Terminate(context.Background(), pid, 10*time.Second)
		r := p.Run(append([]string{"up"}, only...), "BOOTSTRAP_CRASHPOINT=vault:between-unseal-keys")
		if r.Code == 0 {
			t.Fatalf("the crash point did not fire:\n%s", r.Output())
		}
		h := health(t, p, ip)
		if h["sealed"] != true {
			t.Fatalf("vault should still be sealed after the kill, health %v", h)
		}
		p.Up(only...)
		assertUnsealed(t, p, ip)
	})

	t.Run("killed mid-Ansible", func(t *testing.T) {
		p := p.T(t)
		// Change the role inputs (a new node certificate) and kill the run
		// while Ansible works.
		os.Remove(filepath.Join(p.StateDir(), "tls", "vault", "server-1.pem"))
		old, _ := filepath.Glob(filepath.Join(p.StateDir(), "logs", "*-up.log"))
		seen := map[string]bool{}
		for _, l := range old {
			seen[l] = true
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			deadline := time.Now().Add(2 * time.Minute)
			for time.Now().Before(deadline) {
				logs, _ := filepath.Glob(filepath.Join(p.StateDir(), "logs", "*-up.log"))
				for _, l := range logs {
					if seen[l] {
						continue
					}
					if b, _ := os.ReadFile(l); strings.Contains(string(b), "ansible: vault : Copy Vault's TLS CA") && strings.Contains(string(b), "create vault TLS certificate for server-1") {
						cancel() // exec.CommandContext kills with SIGKILL
						return
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
			cancel()
		}()
		r := p.RunContext(ctx, append([]string{"up"}, only...))
		if r.Code == 0 {
			t.Log("the run finished before it was killed; the re-run below still has to converge")
		}
		p.Up(only...)
		assertUnsealed(t, p, ip)
		if r := p.Run(append([]string{"plan"}, only...)); r.Code != 0 {
			t.Errorf("plan after recovery: exit %d\n%s", r.Code, r.Output())
		}
	})

	t.Run("status", func(t *testing.T) {
		p := p.T(t)
		r := p.Run([]string{"status"})
		if r.Code != 0 || !strings.Contains(r.Stdout, "vault") || !strings.Contains(r.Stdout, "active") {
			t.Errorf("status: exit %d\n%s", r.Code, r.Output())
		}
	})

	p.AssertNoSecrets()

	t.Run("down leaves nothing", func(t *testing.T) {
		p := p.T(t)
		r := p.Run([]string{"down", "--auto-approve"})
		if r.Code != 0 {
			t.Fatalf("down: exit %d\n%s", r.Code, r.Output())
		}
		// Processes down signalled may take a moment to go on a loaded
		// machine (seen in CI with two test binaries running); none may stay.
		var left []string
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			pids, _ := proc.Under(p.Dir)
			left = left[:0]
			for _, pid := range pids {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				left = append(left, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(b), "\x00", " ")))
			}
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
		}
		if len(left) > 0 {
			t.Errorf("processes left after down:\n%s", strings.Join(left, "\n"))
		}
		for _, d := range []string{"nodes", "secrets", "tls", "state.json"} {
			if _, err := os.Stat(filepath.Join(p.StateDir(), d)); err == nil {
				t.Errorf("%s left after down", d)
			}
		}
	})
}

// TestVaultKilledAfterInit kills the run between sys/init and storing the
// keys: the next run finds the intent record, wipes the empty Vault and
// initialises it once more — never two sets of keys, never a Vault whose
// keys are lost.
func TestVaultKilledAfterInit(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up a platform")
	}
	p := platformtest.New(t, "  servers = 1\n  clients = 1\n", "")
	only := []string{"--only", "keys,provision,vault"}
	r := p.Run(append([]string{"up"}, only...), "BOOTSTRAP_CRASHPOINT=vault:after-init")
	if r.Code == 0 {
		t.Fatalf("the crash point did not fire:\n%s", r.Output())
	}
	if _, err := os.Stat(filepath.Join(p.StateDir(), "secrets", "vault", "init.json")); err == nil {
		t.Fatal("keys were stored although the run died before storing them")
	}
	if h := health(t, p, p.Subnet.IP(1)); h["initialized"] != true {
		t.Fatalf("vault should be initialised by the killed run: %v", h)
	}
	r = p.Up(only...)
	if !strings.Contains(r.Output(), "wiping the empty Vault") {
		t.Errorf("recovery not reported:\n%s", r.Output())
	}
	assertUnsealed(t, p, p.Subnet.IP(1))
	// The stored keys are the ones that work: a restart unseals with them.
	pid, _ := proc.ReadPidFile(filepath.Join(p.StateDir(), "nodes", "server-1", "run", "vault.pid"))
	proc.Terminate(context.Background(), pid, 10*time.Second)
	p.Up(only...)
	assertUnsealed(t, p, p.Subnet.IP(1))
	p.AssertNoSecrets()
}

// TestVaultRefusesSecondInit: keys exist but the Vault is new (its data was
// wiped by hand) — bootstrap refuses to initialise over the old keys.
func TestVaultRefusesSecondInit(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up a platform")
	}
	p := platformtest.New(t, "  servers = 1\n  clients = 1\n", "")
	only := []string{"--only", "keys,provision,vault"}
	p.Up(only...)
	node := filepath.Join(p.StateDir(), "nodes", "server-1")
	pid, _ := proc.ReadPidFile(filepath.Join(node, "run", "vault.pid"))
	proc.Terminate(context.Background(), pid, 10*time.Second)
	if err := os.RemoveAll(filepath.Join(node, "data", "vault")); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(node, "data", "vault"), 0o700)
	keys, _ := os.ReadFile(filepath.Join(p.StateDir(), "secrets", "vault", "init.json"))
	r := p.Run(append([]string{"up"}, only...))
	if r.Code != 1 || !strings.Contains(r.Output(), "never initialises over existing keys") {
		t.Fatalf("up over a wiped vault: exit %d, want 1 and a refusal\n%s", r.Code, r.Output())
	}
	after, _ := os.ReadFile(filepath.Join(p.StateDir(), "secrets", "vault", "init.json"))
	if string(after) != string(keys) {
		t.Error("the stored keys changed")
	}
	if h := health(t, p, p.Subnet.IP(1)); h["initialized"] != false {
		t.Errorf("vault was initialised: %v", h)
	}
}

func TestVaultHA(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up a platform")
	}
	binDir := platformtest.LinkedBinDir(t)
	p := platformtest.NewWithBinDir(t, binDir, "  clients = 1\n", "vault {\n  ha = true\n}\n")
	only := []string{"--only", "keys,provision,vault"}
	p.Up(only...)
	active := 0
	for i := 1; i <= 3; i++ {
		h := health(t, p, p.Subnet.IP(i))
		if h["initialized"] != true || h["sealed"] != false {
			t.Errorf("server-%d: %v", i, h)
		}
		if h["standby"] == false {
			active++
		}
	}
	if active != 1 {
		t.Errorf("%d active vault nodes, want 1", active)
	}
	// Raft peers: the plan checks them (a missing voter is a change).
	if r := p.Run(append([]string{"plan"}, only...)); r.Code != 0 {
		t.Errorf("plan: exit %d\n%s", r.Code, r.Output())
	}
	r := p.Run([]string{"status"})
	if strings.Count(r.Stdout, "standby") != 2 || strings.Count(r.Stdout, "active") != 1 {
		t.Errorf("status should show one active and two standby vault nodes:\n%s", r.Stdout)
	}
	// One audit setting for the cluster, one log per node: the active
	// node's, in its own directory.
	for i := 1; i <= 3; i++ {
		if h := health(t, p, p.Subnet.IP(i)); h["standby"] == false {
			p.AssertNoSecrets(assertAuditLog(t, p, fmt.Sprintf("server-%d", i)))
		}
	}
	// The new file must outlive the subtest: the later ups run it.
	renew := func() { platformtest.RenewBinary(t, binDir, "vault") }
	t.Run("a new binary restarts one node at a time, the active one last", func(t *testing.T) {
		rollingRestart(t, p.T(t), renew, only)
	})

	// Restart every node: up unseals all three again.
	for i := 1; i <= 3; i++ {
		pid, _ := proc.ReadPidFile(filepath.Join(p.StateDir(), "nodes", "server-"+string(rune('0'+i)), "run", "vault.pid"))
		proc.Terminate(context.Background(), pid, 10*time.Second)
	}
	p.Up(only...)
	for i := 1; i <= 3; i++ {
		assertUnsealed(t, p, p.Subnet.IP(i))
	}
}

// rollingRestart gives the HA Vault of p a new binary (renew: a new file
// of its release) and checks that up restarts the standbys one at a time,
// then the active node, while a token lookup through any node keeps
// working; a first up is killed after the first node's restart.
func rollingRestart(t *testing.T, p *platformtest.Platform, renew func(), only []string) {
	pidOf := func(i int) int {
		pid, _ := proc.ReadPidFile(filepath.Join(p.StateDir(), "nodes", fmt.Sprintf("server-%d", i), "run", "vault.pid"))
		return pid
	}
	before := map[int]int{}
	active := 0
	for i := 1; i <= 3; i++ {
		before[i] = pidOf(i)
		if h := health(t, p, p.Subnet.IP(i)); h["standby"] == false {
			active = i
		}
	}
	root, err := os.ReadFile(filepath.Join(p.StateDir(), "secrets", "vault", "root-token"))
	if err != nil {
		t.Fatal(err)
	}
	// A token lookup needs the active node (a standby forwards it). While
	// the active node steps down no node is active for a moment and every
	// node answers 500 (no active node to forward to); clients ride that
	// out by retrying, so the lookups use Vault's own client and its default
	// retries (2, 1–1.5 s apart), as Nomad, consul-template and our
	// users' applications do.
	hc := vaultHTTP(t, p)
	var clients []*vaultapi.Client
	for i := 1; i <= 3; i++ {
		cfg := vaultapi.DefaultConfig()
		cfg.Address = "https://" + p.Subnet.IP(i) + ":8200"
		cfg.HttpClient = hc
		c, err := vaultapi.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken(strings.TrimSpace(string(root)))
		clients = append(clients, c)
	}
	lookup := func() error {
		var errs []string
		for i, c := range clients {
			_, err := c.Auth().Token().LookupSelf()
			if err == nil {
				return nil
			}
			errs = append(errs, fmt.Sprintf("server-%d: %v", i+1, err))
		}
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}

	renew()
	if r := p.Run(append([]string{"plan"}, only...)); r.Code != 4 || !strings.Contains(r.Stdout, "new binaries: vault; one node at a time") {
		t.Errorf("plan after the new binary: exit %d, want 4 and the rolling restart\n%s", r.Code, r.Output())
	}

	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var order []int
	var failures []string
	rounds := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			err := lookup()
			mu.Lock()
			rounds++
			if err != nil && len(failures) < 10 {
				failures = append(failures, time.Now().Format("15:04:05.000 ")+err.Error())
			}
			for i := 1; i <= 3; i++ {
				if pid := pidOf(i); pid != 0 && pid != before[i] && !slices.Contains(order, i) {
					order = append(order, i)
				}
			}
			mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}()
	// Killed right after the first node restarted, before it was
	// unsealed: the next up unseals it and goes on with the others.
	if r := p.Run(append([]string{"up", "--auto-approve"}, only...), "BOOTSTRAP_CRASHPOINT=vault:after-node-restart"); r.Code != -1 {
		t.Errorf("the crash point vault:after-node-restart: exit %d, want -1 (killed)\n%s", r.Code, r.Output())
	}
	p.Up(only...)
	cancel()
	<-done
	t.Logf("restart order %v (server-%d was active); %d token lookups, %d failed", order, active, rounds, len(failures))
	if len(failures) > 0 {
		t.Errorf("token lookups failed during the rolling restart: %s", strings.Join(failures, "; "))
	}
	if len(order) != 3 || order[2] != active {
		t.Errorf("vault restarted in the order %v, want the two standbys, then the active server-%d", order, active)
	}
	for i := 1; i <= 3; i++ {
		assertUnsealed(t, p, p.Subnet.IP(i))
	}
	if r := p.Run(append([]string{"plan"}, only...)); r.Code != 0 {
		t.Errorf("plan after the rolling restart: exit %d\n%s", r.Code, r.Output())
	}
}
