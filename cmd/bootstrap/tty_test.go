package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestLiveViewInTmux looks at the live view the way a person does: the
// binary runs on a real terminal (a tmux pane) and the test reads the
// screen. A stage that has not run must not look done.
func TestLiveViewInTmux(t *testing.T) {
	if testing.Short() {
		t.Skip("runs tmux")
	}
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is missing: run make tools")
	}
	cfg := minimalConfig(t)
	state := filepath.Join(t.TempDir(), "state")
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	env := append(childEnv(t), "TERM=xterm-256color")
	tmux := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("tmux", append([]string{"-f", "/dev/null", "-S", sock}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	t.Cleanup(func() { exec.Command("tmux", "-S", sock, "kill-server").Run() })

	// screen runs bootstrap in a fresh pane and returns what the pane
	// shows once it has exited.
	run := 0
	screen := func(args ...string) string {
		t.Helper()
		run++
		line := bin + " " + strings.Join(args, " ") + " -c " + cfg + " --state-dir " + state + " --output tty; echo EXIT=$?"
		if run == 1 {
			tmux("new-session", "-d", "-x", "110", "-y", "30", "sh", "-c", line+"; sleep 300")
		} else {
			tmux("respawn-pane", "-k", "sh", "-c", line+"; sleep 300")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for ctx.Err() == nil {
			if s := tmux("capture-pane", "-p"); strings.Contains(s, "EXIT=") {
				return s
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("bootstrap %v did not finish:\n%s", args, tmux("capture-pane", "-p"))
		return ""
	}
	row := func(s, stage string) string {
		m := regexp.MustCompile(`(?m)^\s+(\S+) ` + stage + `\b.*$`).FindString(s)
		return strings.TrimSpace(m)
	}

	s := screen("plan", "--only", "keys,vault")
	if r := row(s, "keys"); !strings.HasPrefix(r, "~ keys") || !strings.Contains(r, "3 change(s) planned") {
		t.Errorf("planned stage: %q, want ~ and its planned changes\n%s", r, s)
	}
	if r := row(s, "vault"); !strings.HasPrefix(r, "… vault") || !strings.Contains(r, "waits for earlier stages") || strings.Contains(r, "✓") {
		t.Errorf("waiting stage: %q, want … and no check mark\n%s", r, s)
	}

	s = screen("up", "--auto-approve", "--only", "keys")
	if r := row(s, "keys"); !strings.HasPrefix(r, "✓ keys") || !strings.Contains(r, "changed, 3 change(s)") {
		t.Errorf("changed stage: %q\n%s", r, s)
	}

	s = screen("plan", "--only", "keys")
	if r := row(s, "keys"); !strings.HasPrefix(r, "= keys") || !strings.Contains(r, "unchanged") {
		t.Errorf("unchanged stage: %q\n%s", r, s)
	}
}
