// Package testcluster starts real Vault, Consul and Nomad processes from the
// repository's bin/ directory for integration tests: dev-mode servers and
// small multi-node clusters, each agent on its own 127.x.y.z address with the
// standard ports. Everything a test starts is stopped by pid in t.Cleanup,
// including the processes a Nomad client leaves behind; nothing is ever
// selected by name.
//
// It is a normal package (not _test.go) so that the tests of every package
// can import it; only tests may use it.
package testcluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// startTimeout bounds each wait of a Start* function.
	startTimeout = 90 * time.Second
	// pollEvery is how often waits poll the servers.
	pollEvery = 150 * time.Millisecond
	// tailLines is how much of a log is shown when something fails.
	tailLines = 40
)

// RepoRoot returns the directory holding the module's go.mod, found by
// walking up from this source file (or, in a -trimpath build, from the
// working directory, which `go test` sets to the package directory).
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	start := filepath.Dir(file)
	if !ok || !filepath.IsAbs(start) {
		start, _ = os.Getwd()
	}
	for dir := start; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("testcluster: no go.mod above " + start)
		}
		dir = parent
	}
}

// Bin returns the absolute path of bin/<name> in the repository. When the
// binary is missing the test is skipped (run `make tools`), unless
// BOOTSTRAP_REQUIRE_TOOLS=1, where a missing binary fails the test.
func Bin(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(RepoRoot(), "bin", name)
	fi, err := os.Stat(p)
	if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return p
	}
	msg := fmt.Sprintf("%s is missing or not executable: run make tools", p)
	if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg + " (BOOTSTRAP_REQUIRE_TOOLS=1)")
	} else {
		t.Skip(msg)
	}
	return ""
}

// Subnet is a /24 of the loopback network, 127.X.Y.0/24, handed to one test
// so its agents can all use the standard ports without colliding with
// other tests.
type Subnet struct {
	x, y int
}

// usedSubnets makes sure no two tests of one process share a subnet; other
// processes (packages tested in parallel) are detected through their
// listening sockets.
var usedSubnets = struct {
	sync.Mutex
	m map[[2]int]bool
}{m: map[[2]int]bool{}}

// NewSubnet returns a random 127.X.Y.0/24 (X in [2,254]) that this process
// has not handed out before, in which no socket is bound, and on which a
// probe bind succeeds.
func NewSubnet(t testing.TB) Subnet {
	t.Helper()
	usedSubnets.Lock()
	defer usedSubnets.Unlock()
	var lastErr error
	for range 200 {
		s := Subnet{x: 2 + mrand.IntN(253), y: mrand.IntN(256)}
		if usedSubnets.m[[2]int{s.x, s.y}] {
			continue
		}
		if busy, err := subnetBusy(s); err != nil || busy {
			lastErr = err
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(s.IP(1), "0"))
		if err != nil {
			lastErr = err
			continue
		}
		l.Close()
		usedSubnets.m[[2]int{s.x, s.y}] = true
		return s
	}
	t.Fatalf("testcluster: no free loopback subnet found (last error: %v)", lastErr)
	return Subnet{}
}

// subnetOr returns *s, or a new subnet when s is nil.
func subnetOr(t testing.TB, s *Subnet) Subnet {
	t.Helper()
	if s != nil {
		return *s
	}
	return NewSubnet(t)
}

// subnetBusy reports whether any TCP socket is bound to an address of s.
func subnetBusy(s Subnet) (bool, error) {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false, nil // not Linux: rely on the probe bind
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		host, _, _ := strings.Cut(f[1], ":")
		v, err := strconv.ParseUint(host, 16, 32)
		if err != nil {
			continue
		}
		// The kernel prints the address as a host-order number of the
		// network-order bytes.
		var ip [4]byte
		binary.NativeEndian.PutUint32(ip[:], uint32(v))
		if ip[0] == 127 && int(ip[1]) == s.x && int(ip[2]) == s.y {
			return true, nil
		}
	}
	return false, nil
}

// IP returns the i-th address of the subnet, "127.X.Y.i".
func (s Subnet) IP(i int) string { return fmt.Sprintf("127.%d.%d.%d", s.x, s.y, i) }

// CIDR returns "127.X.Y.0/24".
func (s Subnet) CIDR() string { return fmt.Sprintf("127.%d.%d.0/24", s.x, s.y) }

// Nomad clients all share the loopback interface, so the dynamic ports of
// their tasks come from one pool: each client gets its own block.
const (
	portsFirst = 20000
	portsBlock = 200
	portsCount = 60 // 20000..31999, below the kernel's ephemeral range
)

var usedPortBlocks = struct {
	sync.Mutex
	m    map[int]bool
	next int
}{m: map[int]bool{}, next: -1}

// portBlock returns a dynamic port range for one Nomad client. The random
// start makes two test processes unlikely to pick the same block.
func portBlock(t testing.TB) (lo, hi int) {
	t.Helper()
	usedPortBlocks.Lock()
	defer usedPortBlocks.Unlock()
	if usedPortBlocks.next < 0 {
		usedPortBlocks.next = mrand.IntN(portsCount)
	}
	for range portsCount {
		b := usedPortBlocks.next
		usedPortBlocks.next = (b + 1) % portsCount
		if !usedPortBlocks.m[b] {
			usedPortBlocks.m[b] = true
			lo = portsFirst + b*portsBlock
			return lo, lo + portsBlock - 1
		}
	}
	t.Fatal("testcluster: all dynamic port blocks are in use")
	return 0, 0
}

// tempRoot makes a short directory for one cluster's files and removes it
// when the test ends. t.TempDir would be longer: Nomad puts unix sockets
// deep below its data dir, and socket paths are limited to 108 bytes.
// Registered before any process starts, the removal runs after they stop.
func tempRoot(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tc-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// writeConfig writes an agent config; it may hold a token, hence 0600 in a
// 0700 dir.
func writeConfig(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// waitFor calls check every pollEvery until it returns nil or ctx ends; the
// error then names what was awaited and the last failure. A check returns a
// permanent error (see exited) to give up at once.
func waitFor(ctx context.Context, what string, check func(context.Context) error) error {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last error
	for {
		if last = check(ctx); last == nil {
			return nil
		}
		var perm permanent
		if errors.As(last, &perm) {
			return fmt.Errorf("%s: %w", what, perm.error)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// mustWait is waitFor, bounded by startTimeout, that gives up as soon as one
// of procs exits (waiting longer would only hide the crash) and then fails
// the test with their log tails.
func mustWait(t testing.TB, what string, procs []*Proc, check func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	err := waitFor(ctx, what, func(ctx context.Context) error {
		if err := exited(procs...); err != nil {
			return err
		}
		return check(ctx)
	})
	if err != nil {
		fatal(t, procs, "testcluster: %v", err)
	}
}

// permanent marks an error that no amount of waiting will fix.
type permanent struct{ error }

// exited returns a permanent error if one of procs is no longer running.
func exited(procs ...*Proc) error {
	for _, p := range procs {
		if !p.Running() {
			return permanent{fmt.Errorf("%s exited (pid %d)", p.Name, p.Pid())}
		}
	}
	return nil
}

// fatal fails the test with msg and the log tails of procs.
func fatal(t testing.TB, procs []*Proc, format string, args ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, format, args...)
	for _, p := range procs {
		b.WriteString("\n")
		b.WriteString(p.dump())
	}
	t.Fatal(b.String())
}

// secretLine matches lines in which HashiCorp tools print a secret (Vault's
// dev mode prints its unseal key and root token at start).
var secretLine = regexp.MustCompile(`(?im)^(\s*(?:unseal key(?: \d+)?|root token|initial root token|secret ?id|recovery key(?: \d+)?)\s*:\s*)\S+`)

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const max = 32 << 10
	var off int64
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		off = fi.Size() - max
	}
	buf := make([]byte, max)
	k, _ := f.ReadAt(buf, off)
	buf = bytes.TrimRight(buf[:k], "\n")
	lines := strings.Split(string(buf), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // partial first line
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
