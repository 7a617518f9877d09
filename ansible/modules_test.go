package ansible

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/proc"
)

// moduleResult is what an ad-hoc run of one of our modules (library/) on
// localhost reported.
type moduleResult struct {
	Changed      bool     `json:"changed"`
	Failed       bool     `json:"failed"`
	Msg          string   `json:"msg"`
	ChangedPaths []string `json:"changed_paths"`
	Stale        bool     `json:"stale"`
}

// runModule runs module with args on localhost with the real Ansible.
func runModule(t *testing.T, module string, args map[string]any, extra ...string) moduleResult {
	t.Helper()
	bin := needAnsible(t)
	dir := t.TempDir()
	if err := Extract(dir); err != nil {
		t.Fatal(err)
	}
	a, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"localhost", "-i", "localhost,", "-c", "local",
		"-e", "ansible_python_interpreter=/usr/bin/python3",
		"-M", filepath.Join(dir, "library"), "-m", module, "-a", string(a)}, extra...)...)
	cmd.Env = append(filteredEnv(), "ANSIBLE_LOAD_CALLBACK_PLUGINS=1", "ANSIBLE_STDOUT_CALLBACK=json",
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(dir, "tmp"), "ANSIBLE_REMOTE_TEMP="+filepath.Join(dir, "tmp"))
	out, _ := cmd.Output() // a failed module exits non-zero; its result says why
	var r struct {
		Plays []struct {
			Tasks []struct {
				Hosts map[string]moduleResult `json:"hosts"`
			} `json:"tasks"`
		} `json:"plays"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Plays) != 1 || len(r.Plays[0].Tasks) != 1 {
		t.Fatalf("ansible -m %s: %v\n%s", module, err, out)
	}
	return r.Plays[0].Tasks[0].Hosts["localhost"]
}

// TestFilesModuleDirs is the files module making directories.
func TestFilesModuleDirs(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a"), filepath.Join(root, "x", "y", "b")
	args := map[string]any{"dirs": []string{a, b}, "dir_mode": "0700"}

	if r := runModule(t, "files", args, "--check"); !r.Changed || r.Failed {
		t.Errorf("check mode on missing directories: %+v, want changed", r)
	}
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Errorf("check mode created %s", a)
	}
	if r := runModule(t, "files", args); !r.Changed || r.Failed {
		t.Fatalf("first run: %+v, want changed", r)
	}
	for _, d := range []string{a, b} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want a 0700 directory", d, fi.Mode(), err)
		}
	}
	if r := runModule(t, "files", args); r.Changed || r.Failed {
		t.Errorf("second run: %+v, want unchanged", r)
	}
	if err := os.Chmod(b, 0o755); err != nil {
		t.Fatal(err)
	}
	if r := runModule(t, "files", args); !r.Changed || len(r.ChangedPaths) != 1 || r.ChangedPaths[0] != b {
		t.Errorf("after chmod 0755 of %s: %+v, want it alone changed", b, r)
	}
	if fi, _ := os.Stat(b); fi.Mode().Perm() != 0o700 {
		t.Errorf("%s is %v after the run, want 0700", b, fi.Mode().Perm())
	}

	f := filepath.Join(root, "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := runModule(t, "files", map[string]any{"dirs": []string{f}}); !r.Failed || !strings.Contains(r.Msg, "not a directory") {
		t.Errorf("a file in the way: %+v, want a failure that says so", r)
	}
	if r := runModule(t, "files", map[string]any{"dirs": []string{a}, "dir_mode": "rwx"}); !r.Failed || !strings.Contains(r.Msg, "octal") {
		t.Errorf("mode rwx: %+v, want a failure that asks for an octal mode", r)
	}

	// A directory given with its own mode, beside one with dir_mode.
	c := filepath.Join(root, "c")
	mixed := map[string]any{"dirs": []any{a, map[string]any{"path": c, "mode": "0777"}}, "dir_mode": "0700"}
	if r := runModule(t, "files", mixed); !r.Changed || len(r.ChangedPaths) != 1 || r.ChangedPaths[0] != c {
		t.Errorf("a 0777 directory: %+v, want it alone changed", r)
	}
	if fi, err := os.Stat(c); err != nil || fi.Mode().Perm() != 0o777 {
		t.Errorf("%s: %v %v, want a 0777 directory", c, fi, err)
	}
	if r := runModule(t, "files", mixed); r.Changed || r.Failed {
		t.Errorf("a 0777 directory, again: %+v, want unchanged", r)
	}
	if r := runModule(t, "files", map[string]any{"dirs": []any{map[string]any{"mode": "0777"}}}); !r.Failed || !strings.Contains(r.Msg, "dirs[0]") {
		t.Errorf("a directory without a path: %+v, want a failure that names it", r)
	}
}

// TestFilesModuleAbsent is the files module removing paths, as teardown
// does: a link goes, not what it points to.
func TestFilesModuleAbsent(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	file, tree, link := filepath.Join(root, "unit.service"), filepath.Join(root, "opt", "nomad"), filepath.Join(root, "bin-link")
	kept := filepath.Join(outside, "keep")
	if err := os.MkdirAll(filepath.Join(tree, "data", "alloc"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{file, filepath.Join(tree, "data", "alloc", "x"), kept} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	args := map[string]any{"absent": []string{file, tree, link, filepath.Join(root, "never-was")}}

	if r := runModule(t, "files", args, "--check"); !r.Changed || r.Failed || len(r.ChangedPaths) != 3 {
		t.Errorf("check mode: %+v, want the three existing paths changed", r)
	}
	if _, err := os.Stat(filepath.Join(tree, "data", "alloc", "x")); err != nil {
		t.Errorf("check mode removed something: %v", err)
	}
	if r := runModule(t, "files", args); !r.Changed || r.Failed {
		t.Fatalf("first run: %+v, want changed", r)
	}
	for _, p := range []string{file, tree, link} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}
	if _, err := os.Stat(kept); err != nil {
		t.Errorf("removing the link %s removed what it points to: %v", link, err)
	}
	if r := runModule(t, "files", args); r.Changed || r.Failed {
		t.Errorf("second run: %+v, want unchanged", r)
	}
}

func TestFilesModule(t *testing.T) {
	root := t.TempDir()
	a, b := filepath.Join(root, "a.hcl"), filepath.Join(root, "b.pem")
	args := map[string]any{"files": []map[string]any{
		{"path": a, "content": "x = 1\n", "mode": "0600"},
		{"path": b, "content": "-----BEGIN CERTIFICATE-----\n", "mode": "0644"},
	}}

	if r := runModule(t, "files", args, "--check"); !r.Changed || r.Failed {
		t.Errorf("check mode on missing files: %+v, want changed", r)
	}
	if _, err := os.Stat(a); !os.IsNotExist(err) {
		t.Errorf("check mode wrote %s", a)
	}
	if r := runModule(t, "files", args); !r.Changed || r.Failed {
		t.Fatalf("first run: %+v, want changed", r)
	}
	for path, want := range map[string]struct {
		content string
		mode    os.FileMode
	}{a: {"x = 1\n", 0o600}, b: {"-----BEGIN CERTIFICATE-----\n", 0o644}} {
		got, err := os.ReadFile(path)
		fi, _ := os.Stat(path)
		if err != nil || string(got) != want.content || fi.Mode().Perm() != want.mode {
			t.Errorf("%s: %q %v %v, want %q %v", path, got, fi.Mode().Perm(), err, want.content, want.mode)
		}
	}
	// An unchanged file keeps its time: services compare it with their
	// start to know whether they are stale.
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(a, old, old); err != nil {
		t.Fatal(err)
	}
	if r := runModule(t, "files", args); r.Changed || r.Failed {
		t.Errorf("second run: %+v, want unchanged", r)
	}
	if fi, _ := os.Stat(a); !fi.ModTime().Equal(old) {
		t.Errorf("%s was touched by a run that changed nothing: %v, want %v", a, fi.ModTime(), old)
	}
	if err := os.Chmod(b, 0o666); err != nil {
		t.Fatal(err)
	}
	if r := runModule(t, "files", args); !r.Changed || len(r.ChangedPaths) != 1 || r.ChangedPaths[0] != b {
		t.Errorf("after chmod 0666 of %s: %+v, want it alone changed", b, r)
	}
	if fi, _ := os.Stat(b); fi.Mode().Perm() != 0o644 {
		t.Errorf("%s is %v after the run, want 0644", b, fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(root); len(entries) != 2 {
		t.Errorf("%s holds %d entries, want the two files and no temporary file", root, len(entries))
	}

	if r := runModule(t, "files", map[string]any{"files": []map[string]any{{"path": a, "content": "", "mode": "rw"}}}); !r.Failed || !strings.Contains(r.Msg, "octal") {
		t.Errorf("mode rw: %+v, want a failure that asks for an octal mode", r)
	}
	if r := runModule(t, "files", map[string]any{"files": []map[string]any{{"path": a, "mode": "0600"}}}); !r.Failed || !strings.Contains(r.Msg, "content") {
		t.Errorf("no content: %+v, want a failure that names it", r)
	}
}

// TestModulesRefuseBadArguments: the modules read their arguments
// themselves (not through AnsibleModule), so they check them themselves.
func TestModulesRefuseBadArguments(t *testing.T) {
	root := t.TempDir()
	svc := map[string]any{"name": "svc", "binary": "/bin/sleep", "run_dir": root, "log_dir": root, "chdir": root}
	with := func(m map[string]any, k string, v any) map[string]any {
		c := map[string]any{}
		for k, v := range m {
			c[k] = v
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		module string
		args   map[string]any
		want   string
	}{
		{"files", map[string]any{"dir": []string{root}}, "unsupported parameters: dir"},
		{"files", map[string]any{"dirs": root}, "dirs: a str, want a list of str"},
		{"files", map[string]any{"files": []string{"s3cr3t"}}, "files: a list, want a list of dict"},
		{"process_service", with(svc, "binary", nil), "missing required argument: binary"},
		{"process_service", with(svc, "restart", "maybe"), "restart: a str, want a bool"},
		{"process_service", with(svc, "args", []int{1}), "args: a list, want a list of str"},
	} {
		r := runModule(t, tc.module, tc.args)
		if !r.Failed || !strings.Contains(r.Msg, tc.want) {
			t.Errorf("%s %v: %+v, want a failure saying %q", tc.module, tc.args, r, tc.want)
		}
		if strings.Contains(r.Msg, "s3cr3t") {
			t.Errorf("%s: the message %q holds a value, which may be a secret", tc.module, r.Msg)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("refused runs left %d entries in %s", len(entries), root)
	}
}

func TestProcessServiceModule(t *testing.T) {
	if _, err := exec.LookPath("start-stop-daemon"); err != nil {
		t.Skip("start-stop-daemon is missing")
	}
	root := t.TempDir()
	pidfile := filepath.Join(root, "svc.pid")
	t.Cleanup(func() {
		if pid, err := proc.ReadPidFile(pidfile); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	args := func(restart bool) map[string]any {
		return map[string]any{"name": "svc", "binary": "/bin/sleep", "args": []string{"600"},
			"run_dir": root, "log_dir": root, "chdir": root, "restart": restart}
	}
	running := func() int {
		t.Helper()
		pid, err := proc.ReadPidFile(pidfile)
		if err != nil {
			t.Fatalf("pid file: %v", err)
		}
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("pid %d of the pid file does not run: %v", pid, err)
		}
		return pid
	}

	if r := runModule(t, "process_service", args(false)); !r.Changed || r.Failed {
		t.Fatalf("first run: %+v, want changed", r)
	}
	first := running()
	if r := runModule(t, "process_service", args(false)); r.Changed || r.Failed {
		t.Errorf("second run: %+v, want unchanged", r)
	}
	if r := runModule(t, "process_service", args(true), "--check"); !r.Changed || running() != first {
		t.Errorf("check mode restart: %+v, want changed and the process left alone", r)
	}
	if r := runModule(t, "process_service", args(true)); !r.Changed || r.Failed {
		t.Fatalf("restart: %+v, want changed", r)
	}
	if second := running(); second == first {
		t.Errorf("restart kept pid %d", first)
	}
	if err := syscall.Kill(first, 0); err == nil {
		t.Errorf("the old process %d still runs after the restart", first)
	}

	// A dead service (stale pid file) is started again. Where no one reaps
	// the orphan it stays a zombie, which the module must count as dead.
	dead := running()
	syscall.Kill(dead, syscall.SIGKILL)
	for i := 0; i < 100 && alive(dead); i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if r := runModule(t, "process_service", args(false)); !r.Changed || r.Failed {
		t.Errorf("after the process died: %+v, want changed", r)
	}
	running()

	// An upgrade: the binary's link now points to another file. Held, the
	// process is left running and reported stale, even with restart set;
	// otherwise it restarts on the new binary.
	link := filepath.Join(root, "bin")
	if err := os.Symlink("/bin/sleep", link); err != nil {
		t.Fatal(err)
	}
	at := func(restart, hold bool) map[string]any {
		a := args(restart)
		a["binary"], a["hold_stale"] = link, hold
		return a
	}
	runModule(t, "process_service", at(true, false))
	old := running()
	b, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "sleep-new"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "sleep-new"), link); err != nil {
		t.Fatal(err)
	}
	for _, restart := range []bool{false, true} {
		if r := runModule(t, "process_service", at(restart, true)); r.Changed || r.Failed || !r.Stale || running() != old {
			t.Errorf("held with restart=%v: %+v, want unchanged, stale and pid %d still running", restart, r, old)
		}
	}
	if r := runModule(t, "process_service", at(false, false)); !r.Changed || r.Failed || r.Stale || running() == old {
		t.Errorf("not held: %+v, want the process restarted on the new binary", r)
	}
	if r := runModule(t, "process_service", at(false, true)); r.Changed || r.Stale {
		t.Errorf("on the new binary: %+v, want unchanged and not stale", r)
	}

	// A configuration file modified after the start, in this run or in one
	// killed before the restart: stale, held as a new binary is.
	config := filepath.Join(root, "svc.hcl")
	if err := os.WriteFile(config, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	withConfig := func(hold bool) map[string]any {
		a := at(false, hold)
		a["configs"] = []string{config, filepath.Join(root, "missing.hcl")}
		return a
	}
	later := time.Now().Add(time.Second)
	if err := os.Chtimes(config, later, later); err != nil {
		t.Fatal(err)
	}
	old = running()
	if r := runModule(t, "process_service", withConfig(true)); r.Changed || r.Failed || !r.Stale || running() != old {
		t.Errorf("held, its configuration newer than it: %+v, want unchanged, stale and pid %d still running", r, old)
	}
	earlier := time.Now().Add(-time.Hour)
	if err := os.Chtimes(config, earlier, earlier); err != nil {
		t.Fatal(err)
	}
	if r := runModule(t, "process_service", withConfig(true)); r.Changed || r.Stale {
		t.Errorf("its configuration older than it: %+v, want unchanged and not stale", r)
	}
	if err := os.Chtimes(config, later, later); err != nil {
		t.Fatal(err)
	}
	if r := runModule(t, "process_service", withConfig(false)); !r.Changed || r.Failed || running() == old {
		t.Errorf("not held, its configuration newer than it: %+v, want it restarted", r)
	}
}

// alive reports whether pid runs: it exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	return !strings.HasPrefix(s[strings.LastIndex(s, ")")+1:], " Z")
}
