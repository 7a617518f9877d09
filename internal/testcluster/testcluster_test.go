package testcluster

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/proc"
)

func TestRepoRoot(t *testing.T) {
	root := RepoRoot()
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "module github.com/platform-bootstrap/bootstrap\n") {
		t.Errorf("%s/go.mod is not this module's", root)
	}
}

// recordTB records Skip and Fatal instead of ending the test.
type recordTB struct {
	testing.TB
	skipped, failed bool
}

func (r *recordTB) Helper()           {}
func (r *recordTB) Skip(args ...any)  { r.skipped = true }
func (r *recordTB) Fatal(args ...any) { r.failed = true }

func TestBinMissing(t *testing.T) {
	t.Setenv("BOOTSTRAP_REQUIRE_TOOLS", "")
	r := &recordTB{TB: t}
	Bin(r, "no-such-tool")
	if !r.skipped || r.failed {
		t.Errorf("missing binary: skipped=%v failed=%v, want a skip", r.skipped, r.failed)
	}
	t.Setenv("BOOTSTRAP_REQUIRE_TOOLS", "1")
	r = &recordTB{TB: t}
	Bin(r, "no-such-tool")
	if r.skipped || !r.failed {
		t.Errorf("missing binary with BOOTSTRAP_REQUIRE_TOOLS=1: skipped=%v failed=%v, want a failure", r.skipped, r.failed)
	}
}

func TestSubnet(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		s := NewSubnet(t)
		if seen[s.CIDR()] {
			t.Fatalf("subnet %s handed out twice", s.CIDR())
		}
		seen[s.CIDR()] = true
		_, n, err := net.ParseCIDR(s.CIDR())
		if err != nil {
			t.Fatal(err)
		}
		ip := net.ParseIP(s.IP(7)).To4()
		if ip == nil || !n.Contains(ip) || ip[3] != 7 || ip[0] != 127 || ip[1] < 2 || ip[1] > 254 {
			t.Errorf("IP(7) = %s, CIDR %s", s.IP(7), s.CIDR())
		}
		if ones, _ := n.Mask.Size(); ones != 24 || !strings.HasSuffix(s.CIDR(), ".0/24") {
			t.Errorf("CIDR() = %s", s.CIDR())
		}
	}
}

func TestSubnetBusy(t *testing.T) {
	s := NewSubnet(t)
	if busy, _ := subnetBusy(s); busy {
		t.Fatalf("fresh subnet %s reported busy", s.CIDR())
	}
	l, err := net.Listen("tcp", net.JoinHostPort(s.IP(9), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if busy, _ := subnetBusy(s); !busy {
		t.Errorf("subnet %s with a listener on %s reported free", s.CIDR(), l.Addr())
	}
}

func TestPortBlocks(t *testing.T) {
	lo1, hi1 := portBlock(t)
	lo2, hi2 := portBlock(t)
	if hi1-lo1 != portsBlock-1 || hi2-lo2 != portsBlock-1 {
		t.Errorf("blocks %d-%d, %d-%d: want %d ports each", lo1, hi1, lo2, hi2, portsBlock)
	}
	if lo1 <= hi2 && lo2 <= hi1 {
		t.Errorf("blocks %d-%d and %d-%d overlap", lo1, hi1, lo2, hi2)
	}
}

func TestProc(t *testing.T) {
	dir := t.TempDir()
	p := Start(t, "sleeper", "/bin/sleep", []string{"300"}, dir)
	pid := p.Pid()
	if !p.Running() || !proc.Alive(pid) {
		t.Fatal("not running after Start")
	}
	if p.LogPath != filepath.Join(dir, "sleeper.log") {
		t.Errorf("LogPath = %s", p.LogPath)
	}
	if _, err := os.Stat(p.LogPath); err != nil {
		t.Error(err)
	}

	p.Restart(t)
	if p.Pid() == pid {
		t.Error("Restart kept the pid")
	}
	if proc.Alive(pid) {
		t.Errorf("old pid %d still alive after Restart", pid)
	}
	if !p.Running() {
		t.Fatal("not running after Restart")
	}

	start := time.Now()
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if p.Running() || proc.Alive(p.Pid()) {
		t.Error("running after Kill")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Kill took %v", d)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("Stop after Kill: %v", err)
	}

	p.Restart(t)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if p.Running() {
		t.Error("running after Stop")
	}
}

func TestProcCleanupStops(t *testing.T) {
	var pid int
	t.Run("inner", func(t *testing.T) {
		p := Start(t, "sleeper", "/bin/sleep", []string{"300"}, t.TempDir())
		pid = p.Pid()
	})
	if proc.Alive(pid) {
		t.Errorf("pid %d still alive after its test ended", pid)
		_ = proc.Kill(t.Context(), pid)
	}
}

func TestProcEnvAndDump(t *testing.T) {
	t.Setenv("NOMAD_TOKEN", "from-the-developer")
	dir := t.TempDir()
	script := `echo "token=$SECRET_VALUE"; echo "Root Token: root-abcdefgh"; echo "Unseal Key: unseal-12345678"; echo "nomad=${NOMAD_TOKEN:-unset}"; echo done; exec sleep 300`
	p := Start(t, "talker", "/bin/sh", []string{"-c", script}, dir, "SECRET_VALUE=s3cr3t-value-1")
	p.Redact("s3cr3t-value-1")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(tail(p.LogPath, 10), "done") {
		if time.Now().After(deadline) {
			t.Fatalf("script output never appeared: %q", tail(p.LogPath, 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
	raw := tail(p.LogPath, 10)
	if !strings.Contains(raw, "s3cr3t-value-1") || !strings.Contains(raw, "nomad=unset") {
		t.Fatalf("env not passed or NOMAD_* not dropped; log:\n%s", raw)
	}
	d := p.dump()
	for _, secret := range []string{"s3cr3t-value-1", "root-abcdefgh", "unseal-12345678"} {
		if strings.Contains(d, secret) {
			t.Errorf("dump shows %q:\n%s", secret, d)
		}
	}
	if !strings.Contains(d, "Root Token: <redacted>") || !strings.Contains(d, "token=<redacted>") {
		t.Errorf("dump lost the redacted lines:\n%s", d)
	}
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(tail(path, 3), "\n")
	if want := []string{"line 4997", "line 4998", "line 4999"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("tail = %q, want %q", got, want)
	}
}
