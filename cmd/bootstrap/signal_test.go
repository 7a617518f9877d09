package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
)

// upChild is `bootstrap up` with toy stages in a child process.
type upChild struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	mu     sync.Mutex
	out    strings.Builder
	lines  chan string
}

func startUp(t *testing.T, mode, state string) *upChild {
	t.Helper()
	c := &upChild{lines: make(chan string, 100)}
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), helperEnv+"="+mode, "HELPER_CONFIG="+minimalConfig(t), "HELPER_STATE="+state)
	c.cmd.Stderr = &c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill()
			c.cmd.Wait()
		}
	})
	go func() {
		defer close(c.lines)
		r := bufio.NewReader(stdout)
		for {
			l, err := r.ReadString('\n')
			c.mu.Lock()
			c.out.WriteString(l)
			c.mu.Unlock()
			if err != nil {
				io.Copy(io.Discard, r)
				return
			}
			select {
			case c.lines <- l:
			default:
			}
		}
	}()
	return c
}

func (c *upChild) waitFor(t *testing.T, substr string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				t.Fatalf("exited before printing %q:\n%s\nstderr: %s", substr, c.stdout(), c.stderr.String())
			}
			if strings.Contains(l, substr) {
				return
			}
		case <-timeout:
			t.Fatalf("no %q in 30s:\n%s", substr, c.stdout())
		}
	}
}

func (c *upChild) wait() syscall.WaitStatus {
	// Read to the end first: Wait closes the pipe, losing what is unread.
	for range c.lines {
	}
	c.cmd.Wait()
	return waitStatus(c.cmd)
}

func (c *upChild) stdout() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// SIGINT or SIGTERM during a slow stage: the context is cancelled, the
// stage recorded as interrupted, the lock released and the exit code 1.
func TestSignalInterruptsUp(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			c := startUp(t, "slow", state)
			c.waitFor(t, "[slow] waiting")
			c.cmd.Process.Signal(sig)
			ws := c.wait()
			if ws.Signaled() || ws.ExitStatus() != exitFailure {
				t.Fatalf("exit %v, want status 1\nstdout:\n%s\nstderr: %s", ws, c.stdout(), c.stderr.String())
			}
			if got := c.stderr.String(); got != "Error: stage slow: interrupted: context canceled\n" {
				t.Errorf("stderr = %q", got)
			}
			out := c.stdout()
			checkPlainLines(t, out)
			if !strings.Contains(out, "[slow] interrupted in") || !strings.Contains(out, "Fix the cause and run `bootstrap up` again") {
				t.Errorf("stdout:\n%s", out)
			}
			st, err := statedir.Load(state)
			if err != nil {
				t.Fatal(err)
			}
			if s := st.Stage("first"); s.Status != statedir.StatusDone {
				t.Errorf("first = %+v", s)
			}
			if s := st.Stage("slow"); s.Status != statedir.StatusInterrupted || s.Error != "interrupted: context canceled" {
				t.Errorf("slow = %+v, want interrupted", s)
			}
			runs, _ := statedir.LoadRuns(state)
			if len(runs) != 1 || runs[0].Outcome != "failed" {
				t.Errorf("runs = %+v", runs)
			}
			// The lock was released, not abandoned: a following run starts
			// at once, without a stale-lock warning, and resumes.
			c2 := startUp(t, "slow", state)
			c2.waitFor(t, "[slow] waiting")
			c2.cmd.Process.Signal(sig)
			c2.wait()
			out2 := c2.stdout()
			if strings.Contains(out2, "ended without releasing the lock") || strings.Contains(out2, "[first] 1 change") {
				t.Errorf("the next run:\n%s", out2)
			}
		})
	}
}

// A stage that ignores its context cannot make bootstrap unkillable: the
// second signal ends the process at once, and the next run takes the lock
// over with a warning.
func TestSecondSignalKills(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	c := startUp(t, "stubborn", state)
	c.waitFor(t, "[slow] waiting")
	c.cmd.Process.Signal(syscall.SIGTERM)
	c.waitFor(t, "[slow] ignoring the interruption")
	// The run stops listening once its context is cancelled; signal until it
	// is gone (the first signal after that kills it).
	done := make(chan syscall.WaitStatus)
	go func() { done <- c.wait() }()
	var ws syscall.WaitStatus
	deadline := time.After(30 * time.Second)
loop:
	for {
		select {
		case ws = <-done:
			break loop
		case <-time.After(20 * time.Millisecond):
			c.cmd.Process.Signal(syscall.SIGTERM)
		case <-deadline:
			t.Fatal("a second SIGTERM did not end the run")
		}
	}
	if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("exit %v, want killed by SIGTERM", ws)
	}
	l, err := statedir.AcquireLock(state, "up")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if l.Stale == nil || l.Stale.PID != c.cmd.Process.Pid {
		t.Errorf("Stale = %+v, want the killed run %d", l.Stale, c.cmd.Process.Pid)
	}
	st, _ := statedir.Load(state)
	if s := st.Stage("slow"); s.Status != statedir.StatusRunning {
		t.Errorf("slow = %+v, want still running (the process died inside it)", s)
	}
}
