// Command bench measures `bootstrap up` against the floor (tools/floor) on
// the same machine, back to back, and writes a report: the floor and up
// with the ratio up/floor, up's per-stage times next to the floor's
// phases, a converged up, down, and the same for 1 and 3 clients (how the
// cost grows with nodes). It measures; it asserts nothing.
//
// Each platform runs in its own temporary directory on its own loopback
// subnet (up: 127.0.8.0/24, the floor: 127.0.9.0/24), never on the
// repository's .bootstrap; every platform is brought down before the next
// starts, also when a run fails.
//
// Usage (make bench):
//
//	go run ./tools/floor/bench -bin bin -bootstrap bin/bootstrap [-clients 2,1,3]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/proc"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
)

func main() {
	bin := flag.String("bin", "bin", "directory with vault, consul, nomad, ... (make tools)")
	bootstrap := flag.String("bootstrap", "bin/bootstrap", "the bootstrap binary to measure")
	clients := flag.String("clients", "2,1,3", "client counts to measure; the first is the main measurement (converged up and down too)")
	skip := flag.String("skip", "", "stages up skips (its --skip), e.g. verify, which the floor does not do")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var counts []int
	for _, s := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -clients: %q is not a count\n", s)
			os.Exit(2)
		}
		counts = append(counts, n)
	}
	if err := run(ctx, os.Stdout, *bin, *bootstrap, *skip, counts); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// result is one measurement of a platform size.
type result struct {
	clients     int
	floor       time.Duration
	floorPhases []phase
	up          time.Duration
	stages      []phase
	downStages  []phase
	down        time.Duration
	// converged are five converged ups in a row, sorted: one alone right
	// after the first up meets the platform still settling.
	converged        []time.Duration
	floorErr, upErr  error
	downErr, convErr error
	// Day 2, measured on the main platform: up after client-1's agents
	// were killed, after one more client was configured, after it was
	// removed again (drained), and after a setting of the Consul servers
	// changed (restarted one at a time), and after consul and nomad got
	// new binaries (a rolling upgrade of every node); then a backup, and a
	// restore after down.
	repair, scaleOut, scaleIn, setting, upgrade            time.Duration
	repairErr, scaleOutErr, scaleInErr, setErr, upgradeErr error
	backup, restore                                        time.Duration
	backupErr, restoreErr                                  error
}

type phase struct {
	name string
	d    time.Duration
}

func run(ctx context.Context, out io.Writer, binDir, bootstrap, skip string, counts []int) error {
	binDir, err := filepath.Abs(binDir)
	if err != nil {
		return err
	}
	if bootstrap, err = filepath.Abs(bootstrap); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	floor := filepath.Join(tmp, "floor")
	if b, err := exec.CommandContext(ctx, "go", "build", "-o", floor, "./tools/floor").CombinedOutput(); err != nil {
		return fmt.Errorf("build the floor: %v\n%s", err, b)
	}

	fmt.Fprintf(out, "# bootstrap up against the floor (tools/floor), %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(out, "# machine: %d CPU(s); load before: %s\n", runtime.NumCPU(), uptime())
	fmt.Fprintf(out, "# floor: the same binaries, TLS, ACLs, PKI calls (the project's pki package), tokens, secrets and\n")
	fmt.Fprintf(out, "#   jobs, started by hand: no Ansible, no stage runner, independent steps at once (127.0.9.0/24);\n")
	fmt.Fprintf(out, "#   it issues the agent certificates once instead of running consul-template.\n")
	fmt.Fprintf(out, "# up: bin/bootstrap up on a fresh state directory, local provider (127.0.8.0/24).\n")
	if skip != "" {
		fmt.Fprintf(out, "# up runs with --skip %s.\n", skip)
	}
	fmt.Fprintln(out)

	var results []result
	for i, n := range counts {
		r := measure(ctx, tmp, floor, binDir, bootstrap, skip, n, i == 0)
		results = append(results, r)
		report(out, r, i == 0)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if len(results) > 1 {
		fmt.Fprintf(out, "\n## cost by number of clients (3 servers each)\n\n")
		fmt.Fprintf(out, "%-8s %10s %10s %8s\n", "clients", "floor", "up", "up/floor")
		for _, r := range results {
			fmt.Fprintf(out, "%-8d %10s %10s %8s\n", r.clients, secs(r.floor, r.floorErr), secs(r.up, r.upErr), ratio(r))
		}
	}
	fmt.Fprintf(out, "\n# load after: %s\n", uptime())
	for _, r := range results {
		for _, err := range []error{r.floorErr, r.upErr, r.convErr, r.repairErr, r.scaleOutErr, r.scaleInErr, r.setErr, r.upgradeErr, r.backupErr, r.restoreErr, r.downErr} {
			if err != nil {
				return fmt.Errorf("%d client(s): %w", r.clients, err)
			}
		}
	}
	return nil
}

// measure runs the floor, then up (and, when full, a converged up) and
// down, for a platform with n clients.
func measure(ctx context.Context, tmp, floor, binDir, bootstrap, skip string, n int, full bool) (r result) {
	r.clients = n
	fmt.Fprintf(os.Stderr, "bench: floor, %d client(s)\n", n)
	t := time.Now()
	var fout bytes.Buffer
	cmd := exec.CommandContext(ctx, floor, "-bin", binDir, "-clients", strconv.Itoa(n))
	cmd.Stdout, cmd.Stderr = &fout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // it cleans up after itself
	cmd.WaitDelay = 2 * time.Minute
	r.floorErr = cmd.Run()
	r.floor = time.Since(t)
	sc := bufio.NewScanner(&fout)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), "\t")
		f, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			continue
		}
		d := time.Duration(f * float64(time.Second))
		if name == "total" {
			r.floor = d // without the floor's own setup and teardown
			continue
		}
		r.floorPhases = append(r.floorPhases, phase{name, d})
	}

	dir := filepath.Join(tmp, fmt.Sprintf("up-%d", n))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		r.upErr = err
		return r
	}
	// The platform's own bin dir of links: the upgrade step points consul
	// and nomad at new files.
	if binDir, r.upErr = linkBinDir(binDir, filepath.Join(dir, "bin")); r.upErr != nil {
		return r
	}
	cfg := filepath.Join(dir, "platform.hcl")
	if err := os.WriteFile(cfg, []byte(localConfig(n, binDir, "")), 0o600); err != nil {
		r.upErr = err
		return r
	}
	bs := func(ctx context.Context, args ...string) (time.Duration, []byte, error) {
		cmd := exec.CommandContext(ctx, bootstrap, append(args, "-c", cfg)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CI=true", "BOOTSTRAP_BACKUP_PASSPHRASE=the bench's passphrase")
		var b bytes.Buffer
		cmd.Stdout, cmd.Stderr = &b, &b
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 2 * time.Minute
		t := time.Now()
		err := cmd.Run()
		if err != nil {
			err = fmt.Errorf("bootstrap %s: %w\n%s", args[0], err, tail(b.String(), 30))
		}
		return time.Since(t), b.Bytes(), err
	}
	// The upgrade's new binaries go once the platform is down.
	undo := func() {}
	defer func() { undo() }()
	defer func() {
		// Down always runs, with a context of its own: the platform must
		// not outlive the bench.
		fmt.Fprintf(os.Stderr, "bench: down, %d client(s)\n", n)
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		r.down, _, r.downErr = bs(dctx, "down", "--auto-approve")
		if _, b, err := bs(dctx, "history", "--output", "json"); err == nil {
			r.downStages = lastStages(b, "down")
		}
	}()
	upArgs := []string{"up", "--auto-approve"}
	if skip != "" {
		upArgs = append(upArgs, "--skip", skip)
	}
	fmt.Fprintf(os.Stderr, "bench: up, %d client(s)\n", n)
	r.up, _, r.upErr = bs(ctx, upArgs...)
	// The stages of a failed or interrupted up are reported too.
	hctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, b, err := bs(hctx, "history", "--output", "json"); err == nil {
		r.stages = lastStages(b, "up")
	}
	if full && r.upErr == nil {
		fmt.Fprintf(os.Stderr, "bench: converged up, %d client(s)\n", n)
		for range 5 {
			var d time.Duration
			if d, _, r.convErr = bs(ctx, upArgs...); r.convErr != nil {
				break
			}
			r.converged = append(r.converged, d)
		}
		slices.Sort(r.converged)

		fmt.Fprintf(os.Stderr, "bench: repair of client-1, %d client(s)\n", n)
		if r.repairErr = killAgents(filepath.Join(dir, ".bootstrap", "nodes", "client-1")); r.repairErr == nil {
			r.repair, _, r.repairErr = bs(ctx, upArgs...)
		}
		fmt.Fprintf(os.Stderr, "bench: scale out to %d client(s)\n", n+1)
		if r.scaleOutErr = os.WriteFile(cfg, []byte(localConfig(n+1, binDir, "")), 0o600); r.scaleOutErr == nil {
			r.scaleOut, _, r.scaleOutErr = bs(ctx, upArgs...)
		}
		fmt.Fprintf(os.Stderr, "bench: scale in to %d client(s)\n", n)
		if r.scaleInErr = os.WriteFile(cfg, []byte(localConfig(n, binDir, "")), 0o600); r.scaleInErr == nil {
			r.scaleIn, _, r.scaleInErr = bs(ctx, upArgs...)
		}
		fmt.Fprintf(os.Stderr, "bench: one setting changed, %d client(s)\n", n)
		if r.setErr = os.WriteFile(cfg, []byte(localConfig(n, binDir, "consul {\n  ui = false\n}\n")), 0o600); r.setErr == nil {
			r.setting, _, r.setErr = bs(ctx, upArgs...)
		}
		fmt.Fprintf(os.Stderr, "bench: rolling upgrade, %d client(s)\n", n)
		if undo, r.upgradeErr = renewBinaries(binDir, "consul", "nomad"); r.upgradeErr == nil {
			r.upgrade, _, r.upgradeErr = bs(ctx, upArgs...)
		}
		fmt.Fprintf(os.Stderr, "bench: backup, down, restore, %d client(s)\n", n)
		archive := filepath.Join(dir, "backup.age")
		if r.backup, _, r.backupErr = bs(ctx, "backup", "-o", archive); r.backupErr == nil {
			if _, _, r.restoreErr = bs(ctx, "down", "--auto-approve"); r.restoreErr == nil {
				r.restore, _, r.restoreErr = bs(ctx, "restore", archive, "--auto-approve")
			}
		}
	}
	return r
}

// lastStages returns the stage durations of the newest run of command in
// the output of `bootstrap history --output json`.
func lastStages(b []byte, command string) []phase {
	var runs []statedir.RunRecord
	if err := json.Unmarshal(b, &runs); err != nil {
		return nil
	}
	var out []phase
	var newest time.Time
	for _, r := range runs {
		if r.Command != command || r.Started.Before(newest) {
			continue
		}
		newest, out = r.Started, nil
		for _, s := range r.Stages {
			out = append(out, phase{s.Name, s.Duration})
		}
	}
	return out
}

func report(out io.Writer, r result, full bool) {
	fmt.Fprintf(out, "## 3 servers + %d client(s)\n\n", r.clients)
	fmt.Fprintf(out, "floor              %s\n", secs(r.floor, r.floorErr))
	fmt.Fprintf(out, "up                 %s\n", secs(r.up, r.upErr))
	fmt.Fprintf(out, "ratio up/floor     %s\n", ratio(r))
	// The floor does not run the verify stage's end-to-end checks.
	if v := stage(r.stages, "verify"); v > 0 && r.upErr == nil && r.floorErr == nil {
		fmt.Fprintf(out, "up without verify  %.1fs (ratio %.2f)\n", (r.up - v).Seconds(), (r.up-v).Seconds()/r.floor.Seconds())
	}
	if full && r.upErr == nil {
		if c := r.converged; r.convErr != nil || len(c) == 0 {
			fmt.Fprintf(out, "converged up       failed\n")
		} else {
			fmt.Fprintf(out, "converged up       %.2fs (median of %d in a row; %.2f–%.2fs)\n", c[len(c)/2].Seconds(), len(c), c[0].Seconds(), c[len(c)-1].Seconds())
		}
		fmt.Fprintf(out, "repair one client  %s (its consul and nomad agents killed, then up)\n", secs(r.repair, r.repairErr))
		fmt.Fprintf(out, "add one client     %s (clients = %d, then up)\n", secs(r.scaleOut, r.scaleOutErr), r.clients+1)
		fmt.Fprintf(out, "remove one client  %s (clients = %d again, then up: drained, stopped, forgotten)\n", secs(r.scaleIn, r.scaleInErr), r.clients)
		fmt.Fprintf(out, "one setting        %s (consul ui = false, then up: the servers restart one at a time)\n", secs(r.setting, r.setErr))
		fmt.Fprintf(out, "rolling upgrade    %s (new consul and nomad files on every node, then up: servers one at a time, the leader last, then clients)\n", secs(r.upgrade, r.upgradeErr))
		fmt.Fprintf(out, "backup             %s (vault, consul and nomad snapshots and the secrets, encrypted)\n", secs(r.backup, r.backupErr))
		fmt.Fprintf(out, "restore            %s (after down: a new platform with the backup's data, jobs placed, verified)\n", secs(r.restore, r.restoreErr))
	}
	fmt.Fprintf(out, "down               %s", secs(r.down, r.downErr))
	for i, s := range r.downStages {
		sep := ", "
		if i == 0 {
			sep = " ("
		}
		fmt.Fprintf(out, "%s%s %.2fs", sep, s.name, s.d.Seconds())
	}
	if len(r.downStages) > 0 {
		fmt.Fprint(out, ")")
	}
	fmt.Fprintln(out)
	fmt.Fprintf(out, "\n%-10s %10s %7s   %-8s %10s %7s\n", "up stage", "time", "share", "floor", "time", "share")
	rows := max(len(r.stages), len(r.floorPhases))
	for i := range rows {
		left, right := strings.Repeat(" ", 29), ""
		if i < len(r.stages) {
			s := r.stages[i]
			left = fmt.Sprintf("%-10s %9.2fs %6.1f%%", s.name, s.d.Seconds(), share(s.d, r.up))
		}
		if i < len(r.floorPhases) {
			f := r.floorPhases[i]
			right = fmt.Sprintf("%-8s %9.2fs %6.1f%%", f.name, f.d.Seconds(), share(f.d, r.floor))
		}
		fmt.Fprintf(out, "%s   %s\n", left, right)
	}
	for _, err := range []error{r.floorErr, r.upErr, r.convErr, r.repairErr, r.scaleOutErr, r.scaleInErr, r.setErr, r.upgradeErr, r.backupErr, r.restoreErr, r.downErr} {
		if err != nil {
			fmt.Fprintf(out, "error: %v\n", err)
		}
	}
	fmt.Fprintln(out)
}

// stage is the duration of the stage called name, or 0.
func stage(ps []phase, name string) time.Duration {
	for _, p := range ps {
		if p.name == name {
			return p.d
		}
	}
	return 0
}

func share(d, total time.Duration) float64 {
	if total == 0 {
		return 0
	}
	return 100 * d.Seconds() / total.Seconds()
}

func secs(d time.Duration, err error) string {
	if err != nil {
		return "failed"
	}
	return fmt.Sprintf("%.1fs", d.Seconds())
}

func ratio(r result) string {
	if r.floorErr != nil || r.upErr != nil || r.floor == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", r.up.Seconds()/r.floor.Seconds())
}

// uptime is the load average line of uptime(1).
func uptime() string {
	b, err := exec.Command("uptime").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// localConfig is the platform.hcl of a local platform with n clients, and
// extra blocks.
func localConfig(n int, binDir, extra string) string {
	return fmt.Sprintf("provider \"local\" {\n  clients = %d\n  subnet  = \"127.0.8.0/24\"\n  bin_dir = %q\n}\n%s", n, binDir, extra)
}

// linkBinDir makes dir a directory of links to everything in src and
// returns it.
func linkBinDir(src, dir string) (string, error) {
	entries, err := os.ReadDir(src)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for _, e := range entries {
		if err := os.Symlink(filepath.Join(src, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// renewBinaries points the links of dir named names to new files of the
// same programs (hard links next to the originals), which bootstrap takes
// for an upgrade: a rolling restart of every agent, as for a new release.
// undo removes the new files.
func renewBinaries(dir string, names ...string) (undo func(), err error) {
	var made []string
	undo = func() {
		for _, f := range made {
			os.Remove(f)
		}
	}
	for _, name := range names {
		orig, err := filepath.EvalSymlinks(filepath.Join(dir, name))
		if err != nil {
			return undo, err
		}
		renewed := fmt.Sprintf("%s.bench-%d", orig, os.Getpid())
		if err := os.Link(orig, renewed); err != nil {
			return undo, err
		}
		made = append(made, renewed)
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return undo, err
		}
		if err := os.Symlink(renewed, filepath.Join(dir, name)); err != nil {
			return undo, err
		}
	}
	return undo, nil
}

// killAgents kills the consul and nomad agents of the node whose directory
// is root, by the pids in its pid files.
func killAgents(root string) error {
	for _, svc := range []string{"consul", "nomad"} {
		pid, err := proc.ReadPidFile(filepath.Join(root, "run", svc+".pid"))
		if err != nil {
			return err
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %s (%d): %w", svc, pid, err)
		}
	}
	return nil
}
