package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// A second run while one holds the state directory exits 3, names the
// holder, and changes nothing.
func TestLockHeldExits3(t *testing.T) {
	cfg := minimalConfig(t)
	state := populatedStateDir(t)
	l, err := statedir.AcquireLock(state, "up")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	before := snapshot(t, state)
	host, _ := os.Hostname()
	re := regexp.MustCompile(fmt.Sprintf(`^Error: state directory %s is locked by another run: pid %d on %s \(up, started \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\); wait for it to finish\n$`,
		regexp.QuoteMeta(state), os.Getpid(), regexp.QuoteMeta(host)))
	for _, cmd := range []string{"up", "plan", "down"} {
		r := runIn(t, filepath.Dir(cfg), nil, cmd, "-c", cfg, "--state-dir", state, "--auto-approve")
		if r.code != exitLocked || !re.MatchString(r.stderr) || r.stdout != "" {
			t.Errorf("%s while locked: exit %d, stdout %q, stderr %q; want 3 naming pid %d", cmd, r.code, r.stdout, r.stderr, os.Getpid())
		}
	}
	if after := snapshot(t, state); !reflect.DeepEqual(before, after) {
		t.Errorf("a refused run changed the state directory:\nbefore %v\nafter  %v", before, after)
	}
	// Reading commands do not need the lock.
	if r := runIn(t, filepath.Dir(cfg), nil, "env", "-c", cfg, "--state-dir", state); r.code != exitOK || r.stdout != "export VAULT_ADDR='https://127.0.1.1:8200'\nexport VAULT_TLS_SERVER_NAME='vault.service.consul'\n" {
		t.Errorf("env while locked: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
}

// holdAndKill starts a process that takes the lock, then SIGKILLs it: what a
// crashed or killed run leaves. It returns the dead holder's pid.
func holdAndKill(t *testing.T, state string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=hold", "HELPER_STATE="+state)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("holder printed %q, %v", line, err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	return cmd.Process.Pid
}

// After SIGKILL the next run gets the lock at once (the kernel drops a
// flock with its process) and warns that the previous run did not release
// it, in every output mode and in the run's log.
func TestStaleLockWarning(t *testing.T) {
	cfg := minimalConfig(t)
	state := filepath.Join(t.TempDir(), "state")
	host, _ := os.Hostname()

	pid := holdAndKill(t, state)
	r := runIn(t, filepath.Dir(cfg), nil, "plan", "-c", cfg, "--state-dir", state, "--output", "plain")
	if r.code == exitLocked || r.code == exitUsage {
		t.Fatalf("plan after a killed run: exit %d, %s", r.code, r.stderr)
	}
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ warning: the previous run \(pid %d on %s \(hold, started [^)]+\)\) ended without releasing the lock; taking it over$`, pid, regexp.QuoteMeta(host)))
	if !re.MatchString(r.stdout) {
		t.Errorf("plain output lacks the stale-lock warning for pid %d:\n%s", pid, r.stdout)
	}
	runs, err := statedir.LoadRuns(state)
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs = %v, %v", runs, err)
	}
	log, _ := os.ReadFile(runs[0].LogFile)
	if !re.Match(log) {
		t.Errorf("the run's log lacks the warning:\n%s", log)
	}
	// That run released the lock properly: the next one has nothing to say.
	r = runIn(t, filepath.Dir(cfg), nil, "plan", "-c", cfg, "--state-dir", state, "--output", "plain")
	if strings.Contains(r.stdout, "ended without releasing the lock") {
		t.Errorf("warning repeated after a clean run:\n%s", r.stdout)
	}

	pid = holdAndKill(t, state)
	r = runIn(t, filepath.Dir(cfg), nil, "plan", "-c", cfg, "--state-dir", state, "--output", "json")
	first, _, _ := strings.Cut(r.stdout, "\n")
	var ev struct {
		Type  stages.EventType     `json:"type"`
		Stale *statedir.LockHolder `json:"stale_lock"`
	}
	if err := json.Unmarshal([]byte(first), &ev); err != nil || ev.Type != stages.EventRunStart || ev.Stale == nil || ev.Stale.PID != pid || ev.Stale.Host != host || ev.Stale.Command != "hold" {
		t.Errorf("first JSON event %s (%v), want run_start with stale_lock pid %d", first, err, pid)
	}
}
