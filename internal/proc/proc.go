// Package proc finds and stops local processes by pid. The local provider
// uses it to take a node down, and the test helpers use it to stop exactly
// the processes they started: nothing here ever selects a process by name.
//
// It reads /proc, so process discovery (Under) works on Linux only.
package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pollInterval is how often Terminate checks whether a process is gone.
const pollInterval = 20 * time.Millisecond

// Alive reports whether a process with this pid exists and has not exited.
// A zombie (exited, not yet reaped by its parent) counts as gone: it holds
// no resources and can no longer be signalled into doing anything.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	state, ok := procState(pid)
	if !ok {
		// No /proc (or the process just vanished): trust kill(0), unless
		// the entry is gone while /proc itself exists.
		if _, err := os.Stat("/proc/self"); err == nil {
			return false
		}
		return true
	}
	return state != 'Z' && state != 'X'
}

// procState returns the state letter of /proc/<pid>/stat ("R", "S", "Z", ...).
func procState(pid int) (byte, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may itself contain
	// spaces or ')': the state is the first field after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0, false
	}
	return b[i+2], true
}

// Under returns the pids of the processes that belong to dir, leaving out
// the calling process and its ancestors (a shell whose working directory is
// inside dir must not be stopped by the command it runs). A process belongs
// to dir when any of these is inside dir:
//   - its working directory (/proc/<pid>/cwd),
//   - its executable (/proc/<pid>/exe),
//   - an element of its argv (/proc/<pid>/cmdline) that is an absolute path,
//     or the value of an element of the form "-flag=/abs/path" or
//     "--flag=/abs/path".
//
// "Inside" means equal to dir or below it: the path must be dir itself or
// start with dir followed by a path separator, so /tmp/a does not contain
// /tmp/ab. Paths are compared after filepath.Clean; dir is also compared in
// its symlink-resolved form, because the kernel reports resolved paths. A
// working directory or executable that was deleted after the process
// started still matches (the kernel's " (deleted)" suffix is ignored). dir
// must not be empty or the root directory.
//
// Processes that cannot be inspected (another user's, or gone during the
// scan) are skipped; they cannot be ours. Zombies have no working directory
// or executable any more and are never returned.
//
// A process started with its working directory inside dir passes that on
// to its children: this is what finds the `nomad executor` and `nomad
// logmon` helpers and the raw_exec tasks of a Nomad client started there,
// which survive the client.
func Under(dir string) ([]int, error) {
	if dir == "" {
		return nil, errors.New("processes under dir: empty dir")
	}
	roots, err := rootsOf(dir)
	if err != nil {
		return nil, fmt.Errorf("processes under %s: %w", dir, err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("processes under %s: listing processes needs /proc: %w", dir, err)
	}
	skip := ancestors()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || skip[pid] {
			continue
		}
		if belongs(pid, roots) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// rootsOf returns dir made absolute and, if different, symlink-resolved. It
// refuses the root directory, under which every process would match.
func rootsOf(dir string) ([]string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	roots := []string{abs}
	if r, err := filepath.EvalSymlinks(abs); err == nil && r != abs {
		roots = append(roots, r)
	}
	for _, r := range roots {
		if r == string(filepath.Separator) {
			return nil, errors.New("refusing the root directory: it contains everything")
		}
	}
	return roots, nil
}

// ancestors returns the calling process and its ancestors.
func ancestors() map[int]bool {
	m := map[int]bool{}
	for pid := os.Getpid(); pid > 0 && !m[pid]; {
		m[pid] = true
		pid = parent(pid)
	}
	return m
}

// parent returns the parent pid from /proc/<pid>/stat, or 0.
func parent(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:])) // state, ppid, ...
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func belongs(pid int, roots []string) bool {
	base := "/proc/" + strconv.Itoa(pid) + "/"
	for _, link := range []string{"cwd", "exe"} {
		if p, err := os.Readlink(base + link); err == nil && inside(strings.TrimSuffix(p, " (deleted)"), roots) {
			return true
		}
	}
	b, err := os.ReadFile(base + "cmdline")
	if err != nil {
		return false
	}
	for _, arg := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
		if strings.HasPrefix(arg, "-") {
			_, v, ok := strings.Cut(arg, "=")
			if !ok {
				continue
			}
			arg = v
		}
		if inside(arg, roots) {
			return true
		}
	}
	return false
}

// inside reports whether the absolute path p is one of roots or below one.
func inside(p string, roots []string) bool {
	if !filepath.IsAbs(p) {
		return false
	}
	p = filepath.Clean(p)
	for _, r := range roots {
		if p == r || strings.HasPrefix(p, r+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// Terminate stops the process pid: SIGTERM, then up to grace for it to
// exit, then SIGKILL. A process that is already gone is not an error. It
// works for any process we may signal, not only our children (it polls
// Alive); when pid is our own child it also reaps it, so no zombie is left.
// It returns when the process is gone, or with an error when ctx ends first.
//
// The pid is trusted: a caller must only pass pids it started or found
// with Under moments ago.
func Terminate(ctx context.Context, pid int, grace time.Duration) error {
	if pid <= 0 {
		return fmt.Errorf("terminate: invalid pid %d", pid)
	}
	if gone(pid) {
		return nil
	}
	if err := signal(pid, syscall.SIGTERM); err != nil {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, grace)
	err := waitGone(gctx, pid)
	cancel()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("terminate pid %d: %w", pid, ctx.Err())
	}
	if err := signal(pid, syscall.SIGKILL); err != nil {
		return err
	}
	if err := waitGone(ctx, pid); err != nil {
		return fmt.Errorf("terminate pid %d: still running after SIGKILL: %w", pid, err)
	}
	return nil
}

// Kill sends SIGKILL to pid and waits until it is gone (reaping it when it
// is our child). A process that is already gone is not an error.
func Kill(ctx context.Context, pid int) error {
	if pid <= 0 {
		return fmt.Errorf("kill: invalid pid %d", pid)
	}
	if gone(pid) {
		return nil
	}
	if err := signal(pid, syscall.SIGKILL); err != nil {
		return err
	}
	if err := waitGone(ctx, pid); err != nil {
		return fmt.Errorf("kill pid %d: %w", pid, err)
	}
	return nil
}

func signal(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to pid %d: %w", sig, pid, err)
	}
	return nil
}

// gone reaps pid if it is an exited child of ours and reports whether the
// process no longer runs.
func gone(pid int) bool {
	var ws syscall.WaitStatus
	// ECHILD (not our child, or already reaped elsewhere) is expected.
	_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	return !Alive(pid)
}

func waitGone(ctx context.Context, pid int) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		if gone(pid) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// ReadPidFile reads a file holding one decimal pid (surrounding whitespace
// allowed), as written by daemons and by our own local provider.
func ReadPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	pid, err := strconv.Atoi(s)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: want a positive decimal pid, got %q", path, s)
	}
	return pid, nil
}
