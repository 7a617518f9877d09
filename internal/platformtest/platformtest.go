// Package platformtest runs the real bootstrap binary against a local-provider
// platform in a test's temporary directory, on its own loopback subnet, and
// makes sure every process it started is gone when the test ends.
package platformtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	"github.com/platform-bootstrap/bootstrap/tools"
)

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// Binary builds bootstrap once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		// One file per test binary in the user's cache, replaced by each
		// build (rename: a running copy keeps its inode), so that test
		// processes, which run no cleanup when killed, leave no copies.
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		dir = filepath.Join(dir, "bootstrap-test")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "bootstrap-"+filepath.Base(os.Args[0]))
		tmp := fmt.Sprintf("%s.%d", buildBin, os.Getpid())
		cmd := exec.Command("go", "build", "-o", tmp, "./cmd/bootstrap")
		cmd.Dir = testcluster.RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		buildErr = os.Rename(tmp, buildBin)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// Platform is one local-provider platform under test.
type Platform struct {
	Dir    string // holds platform.hcl and .bootstrap
	Config string
	Bin    string
	Subnet testcluster.Subnet
	t      testing.TB
	runs   *runLog
}

// runLog keeps every run's output so AssertNoSecrets can scan it.
type runLog struct {
	mu      sync.Mutex
	outputs []string
}

// T returns the platform bound to t, for use inside a subtest: failures go
// to the subtest.
func (p *Platform) T(t testing.TB) *Platform {
	c := *p
	c.t = t
	return &c
}

// New writes platform.hcl with a local provider on a fresh loopback subnet,
// binaries from ./bin, and extra appended (more blocks), and registers a
// cleanup that runs `down` and then stops anything still running under the
// platform's directory.
func New(t testing.TB, providerExtra, extra string) *Platform {
	t.Helper()
	return NewWithBinDir(t, BinDir(), providerExtra, extra)
}

// NewWithBinDir is New with the binaries from binDir.
func NewWithBinDir(t testing.TB, binDir, providerExtra, extra string) *Platform {
	t.Helper()
	p := Prepare(t)
	p.WriteConfig(fmt.Sprintf("provider \"local\" {\n  subnet  = %q\n  bin_dir = %q\n%s}\n%s", p.Subnet.CIDR(), binDir, providerExtra, extra))
	return p
}

// LinkedBinDir returns a directory of links to everything in ./bin, for a
// test that changes what some of them point to.
func LinkedBinDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := os.ReadDir(BinDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := os.Symlink(filepath.Join(BinDir(), e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// relink points dir/name to target, atomically, as make tools does.
func relink(t testing.TB, dir, name, target string) {
	t.Helper()
	if _, err := os.Stat(target); err != nil {
		t.Fatalf("%s is missing: run make test-tools", target)
	}
	tmp := filepath.Join(dir, name+".new")
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// PreviousBinDir returns a LinkedBinDir whose consul and nomad are the
// patch releases before the pins (make test-tools builds them as
// bin/consul-<version> and bin/nomad-<version>), and a func that links the
// pinned ones in their place, as make tools does after a version bump.
func PreviousBinDir(t testing.TB) (dir string, upgrade func()) {
	t.Helper()
	v := tools.Versions()
	dir = LinkedBinDir(t)
	relink(t, dir, "consul", filepath.Join(BinDir(), "consul-"+v["CONSUL_PREVIOUS_VERSION"]))
	relink(t, dir, "nomad", filepath.Join(BinDir(), "nomad-"+v["NOMAD_PREVIOUS_VERSION"]))
	return dir, func() {
		relink(t, dir, "consul", filepath.Join(BinDir(), "consul"))
		relink(t, dir, "nomad", filepath.Join(BinDir(), "nomad"))
	}
}

// RenewBinary links dir/name to a new file of the same program (a hard
// link of ./bin's), which bootstrap takes for an upgrade: it restarts the
// program's services as for a new release. One build of each release is
// costly enough (Vault's above all).
func RenewBinary(t testing.TB, dir, name string) {
	t.Helper()
	orig, err := filepath.EvalSymlinks(filepath.Join(BinDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	// Next to the original (a hard link needs the same file system), named
	// for this test process: the lab's and the platform's tests run at once.
	renewed := fmt.Sprintf("%s.renewed-%d", orig, os.Getpid())
	if err := os.Link(orig, renewed); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(renewed) })
	relink(t, dir, name, renewed)
}

// BinDir is the repository's bin directory (make tools).
func BinDir() string { return filepath.Join(testcluster.RepoRoot(), "bin") }

// Prepare gives a platform directory and subnet without a configuration;
// write one with WriteConfig.
func Prepare(t testing.TB) *Platform {
	t.Helper()
	for _, b := range []string{"vault", "consul", "nomad", "consul-template"} {
		testcluster.Bin(t, b)
	}
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
			t.Fatal("ansible-playbook not found: run make tools")
		}
		t.Skip("ansible-playbook not found: run make tools")
	}
	p := &Platform{Dir: t.TempDir(), Bin: Binary(t), Subnet: testcluster.NewSubnet(t), t: t, runs: &runLog{}}
	p.Config = filepath.Join(p.Dir, "platform.hcl")
	t.Cleanup(p.cleanup)
	return p
}

// WriteConfig writes platform.hcl.
func (p *Platform) WriteConfig(hcl string) {
	p.t.Helper()
	if err := os.WriteFile(p.Config, []byte(hcl), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

// StateDir is the platform's state directory.
func (p *Platform) StateDir() string { return filepath.Join(p.Dir, ".bootstrap") }

// Result is one run of the binary.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Output is stdout and stderr together.
func (r Result) Output() string { return r.Stdout + r.Stderr }

// Run runs bootstrap with args (-c is added) and returns its output and exit
// code. env adds variables.
func (p *Platform) Run(args []string, env ...string) Result {
	p.t.Helper()
	return p.RunContext(context.Background(), args, env...)
}

// runTimeout bounds one run of the binary: a run that hangs fails its test
// with its output, instead of the whole package at go test's timeout.
const runTimeout = 20 * time.Minute

// RunContext is Run with a context that kills the process when done.
func (p *Platform) RunContext(ctx context.Context, args []string, env ...string) Result {
	p.t.Helper()
	runCtx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(runCtx, p.Bin, append(args, "-c", p.Config)...)
	cmd.Dir = p.Dir
	cmd.Env = append(os.Environ(), append([]string{"CI=true"}, env...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	default:
		p.t.Fatalf("run bootstrap %v: %v", args, err)
	}
	p.logOutputs(args, r, time.Since(start))
	if ctx.Err() == nil && runCtx.Err() != nil {
		p.t.Fatalf("bootstrap %v still ran after %s and was killed:\n%s", args, runTimeout, tail(r.Output(), 60))
	}
	return r
}

func (p *Platform) logOutputs(args []string, r Result, took time.Duration) {
	p.runs.mu.Lock()
	p.runs.outputs = append(p.runs.outputs, r.Output())
	p.runs.mu.Unlock()
	p.t.Logf("bootstrap %s: exit %d (%s)", strings.Join(args, " "), r.Code, took.Round(100*time.Millisecond))
}

// Up runs `up --auto-approve` with args and fails the test unless it exits 0.
func (p *Platform) Up(args ...string) Result {
	p.t.Helper()
	r := p.Run(append([]string{"up", "--auto-approve"}, args...))
	if r.Code != 0 {
		p.t.Fatalf("bootstrap up %v: exit %d\n%s", args, r.Code, tail(r.Output(), 60))
	}
	return r
}

// Env returns the variables of `bootstrap env --token who`.
func (p *Platform) Env(who string) map[string]string {
	p.t.Helper()
	args := []string{"env"}
	if who != "" {
		args = append(args, "--token", who)
	}
	cmd := exec.Command(p.Bin, append(args, "-c", p.Config)...)
	cmd.Dir = p.Dir
	out, err := cmd.Output()
	if err != nil {
		p.t.Fatalf("bootstrap env: %v", err)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if ok {
			vars[k] = strings.Trim(v, "'")
		}
	}
	return vars
}

// Jobs lists every Nomad job of the platform as namespace/id, sorted.
func (p *Platform) Jobs() []string {
	p.t.Helper()
	env := p.Env("admin")
	nc, err := cluster.NomadClient(env["NOMAD_ADDR"], env["NOMAD_CACERT"], "", env["NOMAD_TOKEN"])
	if err != nil {
		p.t.Fatal(err)
	}
	list, _, err := nc.Jobs().List(&nomadapi.QueryOptions{Namespace: "*"})
	if err != nil {
		p.t.Fatal(err)
	}
	var out []string
	for _, j := range list {
		out = append(out, j.Namespace+"/"+j.ID)
	}
	slices.Sort(out)
	return out
}

// Secrets returns every value in the platform's secret store.
func (p *Platform) Secrets() []string {
	p.t.Helper()
	var out []string
	filepath.WalkDir(filepath.Join(p.StateDir(), "secrets"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err == nil {
			out = append(out, string(b))
		}
		return nil
	})
	return out
}

// AssertNoSecrets fails if any secret (or any line of a multi-line secret)
// appears in texts, in the run logs or in the output of any run so far.
func (p *Platform) AssertNoSecrets(texts ...string) {
	p.t.Helper()
	p.runs.mu.Lock()
	texts = append(texts, p.runs.outputs...)
	p.runs.mu.Unlock()
	logs, _ := filepath.Glob(filepath.Join(p.StateDir(), "logs", "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err == nil {
			texts = append(texts, string(b))
		}
	}
	for _, s := range p.Secrets() {
		for _, part := range append([]string{s}, strings.Split(s, "\n")...) {
			part = strings.TrimSpace(part)
			if len(part) < 16 || strings.HasPrefix(part, "-----") || strings.HasPrefix(part, "ssh-ed25519 ") {
				continue
			}
			for _, txt := range texts {
				if strings.Contains(txt, part) {
					p.t.Errorf("a secret (%d chars, starting %q) appears in output or logs", len(part), part[:4])
				}
			}
		}
	}
}

// cleanup runs down and stops whatever is left, by pid.
func (p *Platform) cleanup() {
	if p.t.Failed() {
		p.logNodeLogs()
	}
	if _, err := os.Stat(filepath.Join(p.StateDir(), "state.json")); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		r := p.RunContext(ctx, []string{"down", "--auto-approve"})
		cancel()
		if r.Code != 0 {
			p.t.Errorf("cleanup: bootstrap down: exit %d\n%s", r.Code, tail(r.Output(), 30))
		}
	}
	pids, _ := proc.Under(p.Dir)
	for _, pid := range pids {
		p.t.Errorf("cleanup: pid %d still runs under %s; stopping it", pid, p.Dir)
		proc.Terminate(context.Background(), pid, 5*time.Second)
	}
}

// logNodeLogs logs the end of every node's service logs, which a CI run
// keeps nowhere else: the platform directory goes with the test.
func (p *Platform) logNodeLogs() {
	logs, _ := filepath.Glob(filepath.Join(p.StateDir(), "nodes", "*", "logs", "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil || len(b) == 0 {
			continue
		}
		rel, _ := filepath.Rel(p.StateDir(), l)
		p.t.Logf("%s (end):\n%s", rel, tail(string(b), 25))
	}
}

// Tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// NodeLog returns the last lines of a node's service log, for failures.
func (p *Platform) NodeLog(node, service string, n int) string {
	b, _ := os.ReadFile(filepath.Join(p.StateDir(), "nodes", node, "logs", service+".log"))
	return tail(string(b), n)
}
