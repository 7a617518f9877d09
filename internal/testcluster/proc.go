package testcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/parallel"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
)

const (
	// stopGrace is how long a process gets to exit after SIGTERM.
	stopGrace = 10 * time.Second
	// stopTimeout bounds a whole Stop or Kill.
	stopTimeout = 30 * time.Second
)

// Proc is one process started by Start. Cmd is the current process; Restart
// replaces it.
type Proc struct {
	Name    string
	Bin     string
	Args    []string
	Dir     string // working directory; the log is written here too
	LogPath string
	Cmd     *exec.Cmd

	env []string
	red *secrets.Redactor

	mu     sync.Mutex
	done   chan struct{} // closed when the current Cmd has been waited for
	dumped bool          // the log tail was already shown by a failure
}

// Start starts bin with args in dir (created if needed), stdout and stderr
// appended to dir/<name>.log, with the environment of the test plus env
// (VAULT_*, CONSUL_* and NOMAD_* variables of the caller's environment are
// dropped so the developer's settings cannot leak into a test). The process
// is stopped by pid when the test ends, and its log tail is shown if the
// test failed.
func Start(t testing.TB, name, bin string, args []string, dir string, env ...string) *Proc {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := &Proc{
		Name:    name,
		Bin:     bin,
		Args:    args,
		Dir:     dir,
		LogPath: filepath.Join(dir, name+".log"),
		env:     env,
		red:     secrets.NewRedactor(),
	}
	// Registered first, so the stop runs before anything registered
	// earlier (the removal of dir).
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("testcluster: %v", err)
		}
		if t.Failed() {
			p.mu.Lock()
			dumped := p.dumped
			p.mu.Unlock()
			if !dumped {
				t.Log(p.dump())
			}
		}
	})
	if err := p.start(); err != nil {
		t.Fatalf("testcluster: start %s: %v", name, err)
	}
	return p
}

func (p *Proc) start() error {
	logf, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// The child has its own copy of the descriptor.
	defer logf.Close()
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Dir = p.Dir
	cmd.Env = append(cleanEnv(), p.env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// If the test binary dies without running its cleanups (a test
	// timeout panics and exits), the servers die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status is in the log; Stop decides what is an error
		close(done)
	}()
	p.Cmd, p.done = cmd, done
	return nil
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "CONSUL_") || strings.HasPrefix(kv, "NOMAD_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Redact registers secret values that must not appear when the log tail is
// shown.
func (p *Proc) Redact(values ...string) { p.red.Add(values...) }

// Pid returns the pid of the current process.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.Cmd.Process.Pid
}

// Running reports whether the current process has not exited yet.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop stops the process: SIGTERM, and SIGKILL if it has not exited after
// a grace period. Stopping a stopped process does nothing.
func (p *Proc) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stop(false)
}

// Kill sends SIGKILL at once (a crash, for failover tests) and waits until
// the process is gone.
func (p *Proc) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stop(true)
}

func (p *Proc) stop(kill bool) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	pid := p.Cmd.Process.Pid
	var err error
	if kill {
		err = proc.Kill(ctx, pid)
	} else {
		err = proc.Terminate(ctx, pid, stopGrace)
	}
	if err != nil {
		return fmt.Errorf("stop %s (pid %d): %w", p.Name, pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop %s (pid %d): exited but not reaped: %w", p.Name, pid, ctx.Err())
	}
}

// Restart stops the process if it runs and starts it again with the same
// arguments, appending to the same log.
func (p *Proc) Restart(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.stop(false); err != nil {
		t.Fatalf("testcluster: restart: %v", err)
	}
	if err := p.start(); err != nil {
		t.Fatalf("testcluster: restart %s: %v", p.Name, err)
	}
}

// dump returns the log tail for a failure message, with secrets removed,
// and remembers that it was shown.
func (p *Proc) dump() string {
	p.mu.Lock()
	p.dumped = true
	p.mu.Unlock()
	text := secretLine.ReplaceAllString(tail(p.LogPath, tailLines), "${1}"+secrets.Redacted)
	return fmt.Sprintf("--- %s: last %d lines of %s ---\n%s", p.Name, tailLines, p.LogPath, p.red.String(text))
}

// stopLeftovers terminates every process still running under dir (see
// proc.Under) and unmounts what is mounted there: what a stopped Nomad
// client leaves behind (raw_exec tasks, `nomad executor`, `nomad logmon`,
// the tmpfs of each task's secrets dir).
func stopLeftovers(t testing.TB, dir string) {
	t.Helper()
	pids, err := proc.Under(dir)
	if err != nil {
		t.Errorf("testcluster: leftovers under %s: %v", dir, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := parallel.Each(pids, func(pid int) error { return proc.Terminate(ctx, pid, 2*time.Second) }); err != nil {
		t.Errorf("testcluster: leftovers under %s: %v", dir, err)
	}
	if err := proc.UnmountUnder(dir); err != nil {
		t.Errorf("testcluster: leftover mounts: %v", err)
	}
}
