package proc

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// start starts a command in dir, in a process group of its own; the test
// kills that group (by its id, the pid of cmd) at the end, so the children
// of a shell go too.
func start(t *testing.T, dir, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	return cmd
}

func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) {
		t.Error("Alive(self) = false")
	}
	for _, pid := range []int{0, -1} {
		if Alive(pid) {
			t.Errorf("Alive(%d) = true", pid)
		}
	}
	cmd := start(t, t.TempDir(), "sleep", "300")
	pid := cmd.Process.Pid
	if !Alive(pid) {
		t.Fatal("Alive(running child) = false")
	}
	// An exited but unreaped child is a zombie: gone for our purposes.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for Alive(pid) {
		if time.Now().After(deadline) {
			t.Fatal("Alive(killed child) still true after 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st, ok := procState(pid); !ok || st != 'Z' {
		t.Errorf("killed, unreaped child: state %q %v, want zombie", st, ok)
	}
}

func TestUnder(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "node")
	sibling := filepath.Join(root, "node2") // shares the prefix "node" but is not inside
	deep := filepath.Join(in, "a", "b")
	for _, d := range []string{in, sibling, deep} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A copy of sleep inside the dir, started from elsewhere: matched by exe.
	sleepPath, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(sleepPath)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(in, "mysleep")
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}

	byCwd := start(t, deep, "sleep", "300")
	byExe := start(t, sibling, exe, "300")
	byArg := start(t, sibling, "sh", "-c", "sleep 300; true", filepath.Join(in, "conf.hcl"))
	byFlag := start(t, sibling, "sh", "-c", "sleep 300; true", "x", "-config="+filepath.Join(in, "n.hcl"))
	notSibling := start(t, sibling, "sh", "-c", "sleep 300; true", "x", sibling+"/conf.hcl")
	notRelative := start(t, sibling, "sh", "-c", "sleep 300; true", "x", "node/conf.hcl", "-x="+in+"2")

	got, err := Under(in)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*exec.Cmd{"cwd": byCwd, "exe": byExe, "argv": byArg, "-flag=": byFlag} {
		if !slices.Contains(got, c.Process.Pid) {
			t.Errorf("Under missed the process matched by %s (pid %d); got %v", name, c.Process.Pid, got)
		}
	}
	for name, c := range map[string]*exec.Cmd{"sibling dir": notSibling, "relative path": notRelative} {
		if slices.Contains(got, c.Process.Pid) {
			t.Errorf("Under matched a process with only a %s (pid %d)", name, c.Process.Pid)
		}
	}
	if slices.Contains(got, os.Getpid()) {
		t.Error("Under returned the calling process")
	}
	for a := range ancestors() {
		if slices.Contains(got, a) {
			t.Errorf("Under returned an ancestor (pid %d)", a)
		}
	}

	// The working directory still matches after the directory is removed.
	if err := os.RemoveAll(deep); err != nil {
		t.Fatal(err)
	}
	got, err = Under(in)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, byCwd.Process.Pid) {
		t.Errorf("Under missed a process whose cwd was deleted; got %v", got)
	}

	// A symlink to the dir finds the same processes.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(in, link); err != nil {
		t.Fatal(err)
	}
	viaLink, err := Under(link)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(viaLink, byExe.Process.Pid) {
		t.Errorf("Under(symlink) missed pid %d; got %v", byExe.Process.Pid, viaLink)
	}

	for _, bad := range []string{"", "/", "/tmp/.."} {
		if _, err := Under(bad); err == nil {
			t.Errorf("Under(%q) succeeded", bad)
		}
		if _, err := MountsUnder(bad); err == nil {
			t.Errorf("MountsUnder(%q) succeeded", bad)
		}
	}
}

func TestTerminateChild(t *testing.T) {
	cmd := start(t, t.TempDir(), "sleep", "300")
	pid := cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	startT := time.Now()
	if err := Terminate(ctx, pid, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(startT); d > 3*time.Second {
		t.Errorf("sleep ignores nothing, yet Terminate took %v (waited for SIGKILL?)", d)
	}
	if Alive(pid) {
		t.Fatal("still alive after Terminate")
	}
	// Reaped: no /proc entry (not even a zombie) is left.
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
		t.Errorf("pid %d still has a /proc entry: not reaped", pid)
	}
	// Already gone: not an error.
	if err := Terminate(ctx, pid, time.Second); err != nil {
		t.Errorf("Terminate(gone pid) = %v", err)
	}
}

func TestTerminateEscalates(t *testing.T) {
	// A process that ignores SIGTERM must be SIGKILLed after the grace.
	// The shell is started in the background by another shell, so it is
	// not our child: this also covers polling for a non-child.
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	ready := filepath.Join(dir, "ready")
	parent := start(t, dir, "sh", "-c",
		`sh -c 'trap "" TERM; touch `+ready+`; while :; do sleep 0.05; done' & echo $! > `+pidFile+`; wait`)
	var pid int
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if pid, err = ReadPidFile(pidFile); err == nil {
			if _, err := os.Stat(ready); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("grandchild did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if pid == parent.Process.Pid {
		t.Fatal("test setup: expected a grandchild")
	}
	under, err := Under(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(under, pid) {
		t.Errorf("Under(%s) = %v, want it to contain grandchild %d", dir, under, pid)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	startT := time.Now()
	if err := Terminate(ctx, pid, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(startT); d < 300*time.Millisecond {
		t.Errorf("Terminate returned after %v, before the grace: the process did not ignore SIGTERM?", d)
	}
	if Alive(pid) {
		t.Fatal("still alive after Terminate")
	}
}

func TestTerminateContext(t *testing.T) {
	dir := t.TempDir()
	cmd := start(t, dir, "sh", "-c", `trap "" TERM; touch ready; while :; do sleep 0.05; done`)
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(dir, "ready")); err == nil {
			break
		}
		if i > 250 {
			t.Fatal("shell did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	// The grace is longer than the context: Terminate gives up with the
	// context's error instead of sending SIGKILL.
	if err := Terminate(ctx, cmd.Process.Pid, time.Minute); err == nil {
		t.Fatal("Terminate succeeded on a process that ignores SIGTERM within a 200ms context")
	}
	if !Alive(cmd.Process.Pid) {
		t.Error("process died although only SIGTERM (ignored) was sent")
	}
	if err := Kill(context.Background(), cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if Alive(cmd.Process.Pid) {
		t.Error("alive after Kill")
	}
}

func TestTerminateInvalid(t *testing.T) {
	if err := Terminate(context.Background(), 0, time.Second); err == nil {
		t.Error("Terminate(0) succeeded")
	}
}

func TestReadPidFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content string
		want    int
		ok      bool
	}{
		{"1234\n", 1234, true},
		{"  42  ", 42, true},
		{"", 0, false},
		{"abc", 0, false},
		{"-5", 0, false},
		{"0", 0, false},
		{"12 34", 0, false},
	} {
		p := filepath.Join(dir, "pid")
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadPidFile(p)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ReadPidFile(%q) = %d, %v; want %d, ok=%v", tc.content, got, err, tc.want, tc.ok)
		}
	}
	if _, err := ReadPidFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("ReadPidFile(missing) succeeded")
	}
}

func TestUnmountUnder(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "node")
	sibling := filepath.Join(root, "node2")
	inner := filepath.Join(dir, "alloc", "secrets dir") // a space: escaped in mountinfo
	for _, d := range []string{inner, sibling} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mount("tmpfs", inner, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(inner, syscall.MNT_DETACH) })
	if err := syscall.Mount("tmpfs", sibling, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(sibling, syscall.MNT_DETACH) })
	// A mount on top of a mount: both must go, the upper one first.
	nested := filepath.Join(inner, "x")
	if err := os.Mkdir(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", nested, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(nested, syscall.MNT_DETACH) })

	mps, err := MountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{nested, inner}; !slices.Equal(mps, want) {
		t.Fatalf("MountsUnder = %q, want %q", mps, want)
	}
	if err := UnmountUnder(dir); err != nil {
		t.Fatal(err)
	}
	if mps, _ := MountsUnder(dir); len(mps) != 0 {
		t.Errorf("still mounted: %q", mps)
	}
	if mps, _ := MountsUnder(sibling); len(mps) != 1 {
		t.Errorf("the sibling's mount was touched: %q", mps)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("remove after unmount: %v", err)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/a/b`:          "/a/b",
		`/a\040b`:       "/a b",
		`/a\011b\134c`:  "/a\tb\\c",
		`/trailing\04`:  `/trailing\04`,
		`/not\999octal`: `/not\999octal`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnderSkipsAncestors(t *testing.T) {
	if os.Getenv("PROC_TEST_UNDER_HELPER") == "1" {
		// Child mode: print what Under finds for our working directory.
		wd, _ := os.Getwd()
		pids, err := Under(wd)
		if err != nil {
			t.Fatal(err)
		}
		for _, pid := range pids {
			os.Stdout.WriteString("pid " + strconv.Itoa(pid) + "\n")
		}
		return
	}
	// A shell whose cwd is inside dir runs a copy of this test, which
	// calls Under(dir): the shell is an ancestor and must be left out,
	// the sibling sleeping in dir must be found.
	dir := t.TempDir()
	sibling := start(t, dir, "sleep", "300")
	sh := exec.Command("sh", "-c", `"$0" -test.run='^TestUnderSkipsAncestors$'; echo "shell $$"`, os.Args[0])
	sh.Dir = dir
	sh.Env = append(os.Environ(), "PROC_TEST_UNDER_HELPER=1")
	out, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var found []int
	shell := 0
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "pid "); ok {
			n, _ := strconv.Atoi(v)
			found = append(found, n)
		}
		if v, ok := strings.CutPrefix(line, "shell "); ok {
			shell, _ = strconv.Atoi(v)
		}
	}
	if shell == 0 || shell != sh.Process.Pid {
		t.Fatalf("shell pid %d, started %d; output:\n%s", shell, sh.Process.Pid, out)
	}
	if slices.Contains(found, shell) {
		t.Errorf("Under returned the caller's parent shell %d: %v", shell, found)
	}
	if !slices.Contains(found, sibling.Process.Pid) {
		t.Errorf("Under missed the sibling %d: %v", sibling.Process.Pid, found)
	}
}
