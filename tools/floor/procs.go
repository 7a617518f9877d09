package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/parallel"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
)

// procs are the agents the floor started, stopped together at the end.
type procs struct {
	mu   sync.Mutex
	list []*exec.Cmd
	dirs []string // node trees whose leftover processes are stopped too
}

// start runs bin with args in dir, its output appended to log. It dies
// with the floor if the floor dies without stopping it.
func (ps *procs) start(dir, log, bin string, args ...string) error {
	if err := os.MkdirAll(filepath.Dir(log), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", filepath.Base(bin), err)
	}
	go func() { _ = cmd.Wait() }() // reaped here; stop watches the pid
	ps.mu.Lock()
	ps.list = append(ps.list, cmd)
	ps.mu.Unlock()
	return nil
}

// cleanEnv is the environment without VAULT_*, CONSUL_* and NOMAD_*
// settings of the caller, which would change how the agents behave.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch {
		case len(kv) > 6 && kv[:6] == "VAULT_", len(kv) > 7 && kv[:7] == "CONSUL_", len(kv) > 6 && kv[:6] == "NOMAD_":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// stopAll stops every started process at once (SIGTERM, SIGKILL after a
// grace period), then whatever still runs under the node trees (Nomad's
// executors and raw_exec tasks outlive their client), and unmounts what
// is mounted there.
func (ps *procs) stopAll(ctx context.Context) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	errs := []error{parallel.Each(ps.list, func(cmd *exec.Cmd) error {
		return proc.Terminate(ctx, cmd.Process.Pid, 10*time.Second)
	})}
	for _, dir := range ps.dirs {
		pids, err := proc.Under(dir)
		errs = append(errs, err)
		for _, pid := range pids {
			errs = append(errs, proc.Terminate(ctx, pid, 5*time.Second))
		}
		errs = append(errs, proc.UnmountUnder(dir))
	}
	ps.list = nil
	return errors.Join(errs...)
}
