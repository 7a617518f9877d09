// Package ansible holds the playbook and roles that install and configure
// Vault, Consul, Nomad and consul-template on the machines, and the code that
// runs them: the roles are embedded in the binary, written to the state
// directory, and run with ansible-playbook against an inventory generated
// from the inventory contract.
//
// The same roles serve real machines (SSH, systemd, HashiCorp's apt
// repository or a given binary) and the local provider (connection local,
// plain processes with pid files, binaries from ./bin).
package ansible

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
)

//go:embed ansible.cfg site.yml teardown.yml roles library
var files embed.FS

// Extract writes the playbook tree to dir, rewriting only files that differ
// and removing files the binary no longer has.
func Extract(dir string) error {
	want := map[string]bool{}
	err := fs.WalkDir(files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		want[path] = true
		b, err := files.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(path))
		if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, b) {
			return nil
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		return fsutil.WriteFile(dst, b, 0o600)
	})
	if err != nil {
		return fmt.Errorf("extract playbooks to %s: %w", dir, err)
	}
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if !want[filepath.ToSlash(rel)] {
			return os.Remove(path)
		}
		return nil
	})
}

// Digest is a hash of the named roles' files and of vars: when it has not
// changed since the last successful run and the services answer, Ansible has
// nothing to do, so plan can say so without running it.
func Digest(roles []string, vars any) (string, error) {
	h := sha256.New()
	var paths []string
	dirs := []string{"library"} // our modules, which every role uses
	for _, r := range roles {
		dirs = append(dirs, "roles/"+r)
	}
	for _, dir := range dirs {
		err := fs.WalkDir(files, dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			paths = append(paths, path)
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("%s: %w", dir, err)
		}
	}
	// site.yml only maps tags to these roles; leaving it out keeps a new
	// play for one stage from re-running the others.
	paths = append(paths, "ansible.cfg")
	sort.Strings(paths)
	for _, p := range paths {
		b, err := files.ReadFile(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", p, len(b))
		h.Write(b)
	}
	v, err := json.Marshal(vars) // map keys are sorted by encoding/json
	if err != nil {
		return "", err
	}
	h.Write(v)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Inventory is an Ansible inventory in its JSON form.
type Inventory struct {
	Hosts  map[string]map[string]any // host → host vars
	Groups map[string][]string       // group → hosts
	Vars   map[string]any            // vars for all hosts
}

// MarshalJSON renders the YAML/JSON inventory shape ansible-inventory reads.
func (inv Inventory) MarshalJSON() ([]byte, error) {
	children := map[string]any{}
	for g, hosts := range inv.Groups {
		hm := map[string]any{}
		for _, h := range hosts {
			hm[h] = map[string]any{}
		}
		children[g] = map[string]any{"hosts": hm}
	}
	return json.Marshal(map[string]any{
		"all": map[string]any{
			"hosts":    inv.Hosts,
			"children": children,
			"vars":     inv.Vars,
		},
	})
}

// Runner runs the playbook.
type Runner struct {
	// Dir holds the extracted playbook tree.
	Dir string
	// InventoryFile and VarsFiles are passed with -i and -e @file.
	InventoryFile string
	VarsFiles     []string
	// Log receives Ansible's full output (the caller redacts it).
	Log io.Writer
	// Progress is called with each task's name as it starts.
	Progress func(task string)
	// Binary is ansible-playbook (default: found on PATH).
	Binary string
	// SSH says the hosts are machines reached over SSH rather than local
	// nodes; it decides where their temporary files go (see Run).
	SSH bool
}

// Failure is a failed task on a host.
type Failure struct {
	Host, Task, Msg string
}

// Error is returned when the playbook fails; it names every failed task.
type Error struct {
	Failures []Failure
	Err      error
}

func (e *Error) Error() string {
	if len(e.Failures) == 0 {
		return fmt.Sprintf("ansible-playbook: %v", e.Err)
	}
	var b strings.Builder
	for i, f := range e.Failures {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: task %q: %s", f.Host, f.Task, f.Msg)
	}
	return "ansible-playbook failed: " + b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Run runs playbook (relative to Dir) limited to tags and hosts (empty:
// all). It streams progress and returns an *Error naming the failed tasks.
func (r *Runner) Run(ctx context.Context, playbook string, tags, limit []string) error {
	bin := r.Binary
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("ansible-playbook"); err != nil {
			return errors.New("ansible-playbook not found on PATH: install Ansible (Debian: apt-get install ansible) or run `make tools`")
		}
	}
	args := []string{"-i", r.InventoryFile}
	for _, f := range r.VarsFiles {
		args = append(args, "-e", "@"+f)
	}
	if len(tags) > 0 {
		args = append(args, "--tags", strings.Join(tags, ","))
	}
	// Tasks tagged machines never apply to a local node (their conditions
	// say so too). Skipped by tag they cost nothing; skipped by their
	// condition, each costs a worker process per node.
	if !r.SSH {
		args = append(args, "--skip-tags", "machines")
	}
	if len(limit) > 0 {
		args = append(args, "--limit", strings.Join(limit, ","))
	}
	args = append(args, playbook)
	// SSH connections are shared for the run (ControlPersist) and closed at
	// its end, so no ssh master outlives bootstrap. A short directory: the
	// sockets' paths must fit the 108 bytes of a Unix socket address.
	removeStaleTemp()
	cpDir, err := os.MkdirTemp("", tempPrefix("ssh"))
	if err != nil {
		return err
	}
	defer closeSSHMasters(cpDir)
	localTmp, remoteTmp, cleanup, err := r.tempDirs()
	if err != nil {
		return err
	}
	defer cleanup()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = r.Dir
	cmd.Env = append(filteredEnv(),
		"ANSIBLE_CONFIG="+filepath.Join(r.Dir, "ansible.cfg"),
		"ANSIBLE_STDOUT_CALLBACK=ansible.posix.jsonl",
		"ANSIBLE_LOAD_CALLBACK_PLUGINS=1",
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_HOST_KEY_CHECKING=True",
		"ANSIBLE_LOCAL_TEMP="+localTmp,
		"ANSIBLE_REMOTE_TEMP="+remoteTmp,
		"ANSIBLE_SSH_CONTROL_PATH_DIR="+cpDir,
	)
	// Let the playbook finish its current task on cancel rather than leave
	// half-written files: SIGTERM first, SIGKILL after a grace period.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	dieWithParent(cmd)
	log := r.Log
	if log == nil {
		log = io.Discard
	}
	cmd.Stderr = log
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ansible-playbook: %w", err)
	}
	failures := r.follow(out, log)
	err = cmd.Wait()
	if err == nil && len(failures) == 0 {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("ansible-playbook interrupted: %w", ctx.Err())
	}
	if err == nil {
		err = errors.New("tasks failed")
	}
	return &Error{Failures: failures, Err: err}
}

// tempDirs makes the run's private directories for Ansible's temporary
// files, where the modules it runs are written: a fixed path in a shared
// directory such as /tmp lets another user create it first and swap those
// modules, which then run as the node's user (often root). On this machine
// both the local and, for local nodes, the "remote" directory are new 0700
// directories that cleanup removes. On machines reached over SSH the remote
// one is a per-run directory under the remote user's ~/.ansible/tmp, which
// Ansible keeps private (0700); the user's home, not /tmp.
func (r *Runner) tempDirs() (local, remote string, cleanup func(), err error) {
	// os.MkdirTemp picks a fresh name and creates it 0700.
	dir, err := os.MkdirTemp("", tempPrefix("ansible"))
	if err != nil {
		return "", "", nil, fmt.Errorf("ansible temporary directory: %w", err)
	}
	cleanup = func() { os.RemoveAll(dir) }
	local, remote = filepath.Join(dir, "local"), filepath.Join(dir, "remote")
	for _, d := range []string{local, remote} {
		if err := os.Mkdir(d, 0o700); err != nil {
			cleanup()
			return "", "", nil, fmt.Errorf("ansible temporary directory: %w", err)
		}
	}
	if r.SSH {
		remote = "~/.ansible/tmp/" + filepath.Base(dir)
	}
	return local, remote, cleanup, nil
}

// closeSSHMasters asks every ssh master with a control socket in dir to
// exit, then removes dir.
func closeSSHMasters(dir string) {
	socks, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, s := range socks {
		// The host argument is required but unused with -O.
		exec.Command("ssh", "-o", "ControlPath="+s, "-O", "exit", "bootstrap").Run()
	}
	os.RemoveAll(dir)
}

// tempPrefix names a run's temporary directories after the process, so a
// later run can tell those of a killed run (SIGKILL runs no cleanup).
func tempPrefix(kind string) string {
	return fmt.Sprintf("bootstrap-%s-%d-", kind, os.Getpid())
}

// removeStaleTemp removes this user's temporary directories left by runs
// whose process is gone, closing any ssh master still listening in them.
func removeStaleTemp() {
	for _, kind := range []string{"ssh", "ansible"} {
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "bootstrap-"+kind+"-*-*"))
		for _, dir := range dirs {
			var pid int
			rest := strings.TrimPrefix(filepath.Base(dir), "bootstrap-"+kind+"-")
			if _, err := fmt.Sscanf(rest, "%d-", &pid); err != nil || pid <= 0 || processAlive(pid) {
				continue
			}
			if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() || !ownedByMe(fi) {
				continue
			}
			if kind == "ssh" {
				closeSSHMasters(dir)
			}
			os.RemoveAll(dir)
		}
	}
}

// taskTime is how the log stamps a task's start: the run log's own
// format, to the millisecond.
const taskTime = "2006-01-02T15:04:05.000Z07:00"

// event is the part of an ansible.posix.jsonl line we read.
type event struct {
	Event string `json:"_event"`
	Task  struct {
		Name string `json:"name"`
	} `json:"task"`
	Hosts map[string]struct {
		Msg     any    `json:"msg"`
		Stderr  string `json:"stderr"`
		Stdout  string `json:"stdout"`
		Failed  bool   `json:"failed"`
		Changed bool   `json:"changed"`
	} `json:"hosts"`
}

func (r *Runner) follow(out io.Reader, log io.Writer) []Failure {
	var failures []Failure
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	seen := map[string]bool{}
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if json.Unmarshal(line, &ev) != nil {
			fmt.Fprintf(log, "%s\n", line)
			continue
		}
		switch ev.Event {
		case "v2_playbook_on_task_start", "v2_runner_on_start", "v2_playbook_on_handler_task_start":
			// Timed, so that the log tells where a slow play spends it.
			fmt.Fprintf(log, "%s TASK %s\n", time.Now().UTC().Format(taskTime), ev.Task.Name)
		case "v2_runner_on_ok", "v2_runner_on_skipped":
			// Progress names tasks that did something, not the skipped
			// branches of the other world (systemd vs process).
			if ev.Event == "v2_runner_on_ok" && r.Progress != nil && !seen[ev.Task.Name] {
				seen[ev.Task.Name] = true
				r.Progress(ev.Task.Name)
			}
			for h, res := range ev.Hosts {
				state := "ok"
				if res.Changed {
					state = "changed"
				}
				if ev.Event == "v2_runner_on_skipped" {
					state = "skipped"
				}
				fmt.Fprintf(log, "  %s: %s\n", h, state)
			}
		case "v2_runner_on_failed", "v2_runner_on_unreachable":
			for h, res := range ev.Hosts {
				msg := strings.TrimSpace(fmt.Sprint(res.Msg))
				// A raw task over SSH runs on a terminal, which sends its
				// standard error to its standard output.
				if res.Stderr != "" {
					msg += ": " + lastLines(res.Stderr, 5)
				} else if res.Stdout != "" {
					msg += ": " + lastLines(res.Stdout, 5)
				}
				if ev.Event == "v2_runner_on_unreachable" {
					msg = "unreachable: " + msg
				}
				failures = append(failures, Failure{Host: h, Task: ev.Task.Name, Msg: msg})
				fmt.Fprintf(log, "  %s: FAILED: %s\n", h, msg)
			}
		default:
			fmt.Fprintf(log, "%s\n", line)
		}
	}
	slices.SortFunc(failures, func(a, b Failure) int { return strings.Compare(a.Host, b.Host) })
	return failures
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(strings.ReplaceAll(s, "\r", "")), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// filteredEnv drops variables that would change how the playbook behaves
// behind our back (a user's ANSIBLE_* settings), keeping the rest.
func filteredEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ANSIBLE_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}
