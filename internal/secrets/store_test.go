package secrets_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
)

const helperEnv = "BOOTSTRAP_SECRETS_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		start, _ := strconv.Atoi(os.Getenv("HELPER_START"))
		os.Exit(putForever(dir, start))
	}
	os.Exit(m.Run())
}

// putForever overwrites one secret with ever new values until killed. Each
// value is valueOf(i): long enough that a write takes a while, and
// recognisable as whole or torn.
func putForever(dir string, start int) int {
	s, err := secrets.Open(dir, secrets.NewRedactor())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i := start; ; i++ {
		if err := s.Put("vault/init.json", valueOf(i)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("put", i)
	}
}

const valueLen = 1 << 20

func valueOf(i int) string {
	head := fmt.Sprintf("value %d:", i)
	return head + strings.Repeat(string(rune('a'+i%26)), valueLen-len(head))
}

func isWhole(v string) bool {
	head, rest, ok := strings.Cut(v, ":")
	var i int
	if _, err := fmt.Sscanf(head, "value %d", &i); err != nil || !ok {
		return false
	}
	return v == valueOf(i) && len(rest) > 0
}

func perm(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestStorePermissions(t *testing.T) {
	old := syscall.Umask(0) // permissions must not depend on the umask
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "secrets")
	s, err := secrets.Open(dir, secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put("consul/tokens/operator-read", "0b1c2d3e-operator"); err != nil {
		t.Fatal(err)
	}
	if err := s.Put("top-level", "top-level-secret"); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]fs.FileMode{
		dir: 0o700, filepath.Join(dir, "consul"): 0o700, filepath.Join(dir, "consul", "tokens"): 0o700,
		s.Path("consul/tokens/operator-read"): 0o600, s.Path("top-level"): 0o600,
	} {
		if got := perm(t, path); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}

	// Permissions that drifted (a restore from backup, a careless chmod) are
	// tightened when the store is opened again.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Join(dir, "consul"), 0o777)
	os.Chmod(s.Path("consul/tokens/operator-read"), 0o644)
	os.Chmod(s.Path("top-level"), 0o666)
	if _, err := secrets.Open(dir, secrets.NewRedactor()); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]fs.FileMode{
		dir: 0o700, filepath.Join(dir, "consul"): 0o700,
		s.Path("consul/tokens/operator-read"): 0o600, s.Path("top-level"): 0o600,
	} {
		if got := perm(t, path); got != want {
			t.Errorf("after reopening, %s: mode %v, want %v", path, got, want)
		}
	}
	// Put over a file whose mode drifted replaces it with a 0600 one.
	os.Chmod(s.Path("top-level"), 0o644)
	if err := s.Put("top-level", "top-level-secret-2"); err != nil {
		t.Fatal(err)
	}
	if got := perm(t, s.Path("top-level")); got != 0o600 {
		t.Errorf("Put kept mode %v", got)
	}
}

func TestStoreGetPutDelete(t *testing.T) {
	red := secrets.NewRedactor()
	s, err := secrets.Open(t.TempDir(), red)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.Get("nomad/bootstrap-token"); err != nil || ok || v != "" {
		t.Errorf("Get of a missing secret = %q, %v, %v", v, ok, err)
	}
	if err := s.Put("nomad/bootstrap-token", "4b1e-nomad-bootstrap"); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := s.Get("nomad/bootstrap-token"); err != nil || !ok || v != "4b1e-nomad-bootstrap" {
		t.Errorf("Get = %q, %v, %v", v, ok, err)
	}
	if got := red.String("token 4b1e-nomad-bootstrap"); got != "token "+secrets.Redacted {
		t.Errorf("a stored secret is not redacted: %q", got)
	}
	vals, err := s.Values()
	if err != nil || !slices.Equal(vals, []string{"4b1e-nomad-bootstrap"}) {
		t.Errorf("Values = %v, %v", vals, err)
	}
	if err := s.Delete("nomad/bootstrap-token"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("nomad/bootstrap-token"); err != nil {
		t.Errorf("deleting a missing secret: %v", err)
	}
	if _, ok, _ := s.Get("nomad/bootstrap-token"); ok {
		t.Error("deleted secret still there")
	}
	for _, bad := range []string{"", "/etc/passwd", "../outside", "a/../../b", ".hidden", "vault/.tmp"} {
		if err := s.Put(bad, "whatever-value"); err == nil {
			t.Errorf("Put(%q) accepted", bad)
		}
		if _, _, err := s.Get(bad); err == nil {
			t.Errorf("Get(%q) accepted", bad)
		}
		if err := s.Delete(bad); err == nil {
			t.Errorf("Delete(%q) accepted", bad)
		}
	}
}

// Opening a store registers what it holds, so a later run redacts secrets
// it never read itself. It leaves temporary files alone: one may be the
// write in flight of a run that holds the lock (stages.Open removes them).
func TestOpenRegistersAndKeepsTemps(t *testing.T) {
	dir := t.TempDir()
	s, _ := secrets.Open(dir, secrets.NewRedactor())
	s.Put("grafana/admin-password", "correct-horse-battery")
	tmp := filepath.Join(dir, "grafana", ".admin-password.tmp-123")
	os.WriteFile(tmp, []byte("half a valu"), 0o600)

	red := secrets.NewRedactor()
	if _, err := secrets.Open(dir, red); err != nil {
		t.Fatal(err)
	}
	if got := red.String("password correct-horse-battery"); got != "password "+secrets.Redacted {
		t.Errorf("String = %q", got)
	}
	if got := red.String("half a valu"); got != "half a valu" {
		t.Errorf("Open registered a temporary file's content: %q", got)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Errorf("Open removed a temporary file that may be a write in flight: %v", err)
	}
}

func TestGetOrCreateKeepsFirst(t *testing.T) {
	s, _ := secrets.Open(t.TempDir(), secrets.NewRedactor())
	calls := 0
	gen := func() (string, error) { calls++; return fmt.Sprintf("generated-value-%d", calls), nil }
	v1, created, err := s.GetOrCreate("consul/gossip-key", gen)
	if err != nil || !created || v1 != "generated-value-1" {
		t.Fatalf("first GetOrCreate = %q, %v, %v", v1, created, err)
	}
	// Another store on the same directory: what a later run sees.
	s2, _ := secrets.Open(s.Dir(), secrets.NewRedactor())
	v2, created, err := s2.GetOrCreate("consul/gossip-key", gen)
	if err != nil || created || v2 != v1 || calls != 1 {
		t.Errorf("second GetOrCreate = %q, %v, %v after %d generations; want the first value", v2, created, err, calls)
	}
	_, _, err = s.GetOrCreate("nomad/gossip-key", func() (string, error) { return "", errors.New("no entropy") })
	if err == nil || !strings.Contains(err.Error(), "nomad/gossip-key") || !strings.Contains(err.Error(), "no entropy") {
		t.Errorf("generator error = %v", err)
	}
	if _, ok, _ := s.Get("nomad/gossip-key"); ok {
		t.Error("a failed generation stored something")
	}
}

func TestPutLeavesNoTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	s, _ := secrets.Open(dir, secrets.NewRedactor())
	for i := range 5 {
		if err := s.Put("vault/root-token", fmt.Sprintf("root-token-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	// A Put that cannot complete (the name is taken by a directory) cleans
	// up after itself too.
	os.MkdirAll(s.Path("vault/sub"), 0o700)
	if err := s.Put("vault/sub", "value-over-a-dir"); err == nil {
		t.Error("Put over a directory succeeded")
	}
	var names []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	if !slices.Equal(names, []string{"/vault/root-token"}) {
		t.Errorf("files in the store: %v", names)
	}
	if v, _, _ := s.Get("vault/root-token"); v != "root-token-4" {
		t.Errorf("value = %q", v)
	}
}

// A process killed in the middle of Put leaves the old value or the new
// one, never a torn mix; its temporary file is what the lock holder's
// clean-up (fsutil.RemoveTemps) removes.
func TestPutSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 0))
	last := -1
	// Under load the helper may not reach its first Put before the kill:
	// each round that found nothing yet waits longer.
	var extra time.Duration
	for round := range 15 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		start := (round + 1) * 1000 // each round writes its own values
		cmd.Env = append(os.Environ(), helperEnv+"="+dir, "HELPER_START="+strconv.Itoa(start))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(5+rng.IntN(40))*time.Millisecond + extra)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() {
			t.Fatalf("round %d: helper exited on its own: %v\n%s", round, ws, out.String())
		}
		b, err := os.ReadFile(filepath.Join(dir, "vault", "init.json"))
		if errors.Is(err, fs.ErrNotExist) && last < 0 {
			extra += 50 * time.Millisecond
			continue // killed before its first Put finished
		}
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !isWhole(string(b)) {
			t.Fatalf("round %d: a SIGKILL left a torn secret (%d bytes, starts %q)", round, len(b), b[:min(len(b), 20)])
		}
		// The value is one the helper wrote completely or was writing.
		var puts []int
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			if n, ok := strings.CutPrefix(l, "put "); ok {
				i, _ := strconv.Atoi(n)
				puts = append(puts, i)
			}
		}
		var i int
		fmt.Sscanf(string(b), "value %d:", &i)
		done := len(puts)
		switch {
		case done > 0 && (i == start+done-1 || i == start+done): // the last finished Put, or the one under way
		case done == 0 && (i == last || i == start):
		default:
			t.Fatalf("round %d: stored value %d, but the helper had finished %d Puts from %d (before: %d)", round, i, done, start, last)
		}
		last = i
		if _, err := secrets.Open(dir, secrets.NewRedactor()); err != nil {
			t.Fatal(err)
		}
		if err := fsutil.RemoveTemps(filepath.Join(dir, "vault")); err != nil {
			t.Fatal(err)
		}
		entries, _ := os.ReadDir(filepath.Join(dir, "vault"))
		if len(entries) != 1 {
			t.Fatalf("round %d: after the clean-up the store holds %d files", round, len(entries))
		}
	}
	if last < 0 {
		t.Fatal("no Put finished in any round")
	}
}
