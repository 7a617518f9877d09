package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

var update = flag.Bool("update", false, "rewrite the .golden files of internal/config/testdata/invalid from `bootstrap validate`")

// bin is the real bootstrap binary, built once for the package's tests.
var bin string

// helperEnv makes the test binary run one CLI command with toy stages
// instead of the tests (see cliHelper).
const helperEnv = "BOOTSTRAP_CLI_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(cliHelper(mode))
	}
	flag.Parse()
	dir, err := os.MkdirTemp("", "bootstrap-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "bootstrap")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building bootstrap:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is what a run of the binary did.
type result struct {
	code           int
	stdout, stderr string
}

// childEnv is the environment runs of the binary get: no CI, no variable
// the corpus expects unset, and a HOME of its own (env("HOME") in the
// corpus must be set).
func childEnv(t *testing.T, extra ...string) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "CI", "HOME", "BOOTSTRAP_TEST_UNSET_TOKEN", "BOOTSTRAP_TEST_RUNNER_TOKEN", passphraseEnv:
			continue
		}
		env = append(env, kv)
	}
	return append(append(env, "HOME="+t.TempDir()), extra...)
}

// runIn runs the binary in dir.
func runIn(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	if env == nil {
		cmd.Env = childEnv(t)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %v: %v", args, err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
}

// minimalConfig writes a provider "local" {} file into a new directory.
func minimalConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "platform.hcl")
	if err := os.WriteFile(p, []byte("provider \"local\" {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// snapshot describes every file and directory under dir: mode, size,
// modification time and a hash of the content. Nil if dir does not exist.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		m[strings.TrimPrefix(p, dir)] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// populatedStateDir is the state directory of a platform that is partly up.
func populatedStateDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	os.MkdirAll(filepath.Join(dir, "secrets", "vault"), 0o700)
	os.WriteFile(filepath.Join(dir, statedir.StateFile), []byte(`{"version":1,"stages":{"keys":{"status":"done","changes":3}},"outputs":{"vault_addr":"https://127.0.1.1:8200"}}`+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "secrets", "vault", "root-token"), []byte("hvs.populated-root-token"), 0o600)
	os.WriteFile(filepath.Join(dir, statedir.LockFile), nil, 0o600)
	return dir
}

// cliHelper is the child process of the signal tests: a real `up` through
// globals.execute (flags, lock, signal handling, output, exit code), with
// toy stages in place of the platform's.
func cliHelper(mode string) int {
	if mode == "hold" { // take the lock and wait to be killed
		dir := os.Getenv("HELPER_STATE")
		os.MkdirAll(dir, 0o700)
		if _, err := statedir.AcquireLock(dir, "hold"); err != nil {
			fmt.Println(err)
			return 1
		}
		fmt.Println("locked")
		time.Sleep(time.Minute)
		return 0
	}
	g := &globals{
		stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr,
		config: os.Getenv("HELPER_CONFIG"), stateDir: os.Getenv("HELPER_STATE"),
		output: "plain", autoApprove: true,
	}
	err := g.execute("up", func(ctx context.Context, r *stages.Runner, sel stages.Selection, _ *stages.Session) ([]statedir.StageResult, error) {
		r.Stages = []stages.Stage{outputStage("first"), slowStage{stubborn: mode == "stubborn"}}
		return r.Up(ctx, sel)
	})
	return exitCode(err, os.Stderr)
}

// outputStage converges by recording an output named after itself.
type outputStage string

func (s outputStage) Name() string { return string(s) }

func (s outputStage) Plan(_ context.Context, e *stages.Env) ([]stages.Change, error) {
	if e.State.Output(string(s)) == "" {
		return []stages.Change{{Action: "create", Target: "output " + string(s)}}, nil
	}
	return nil, nil
}

func (s outputStage) Apply(_ context.Context, e *stages.Env) error {
	e.Step("recording %s", s)
	return e.State.SetOutput(string(s), "done")
}

// slowStage waits in Apply until its context ends; a stubborn one ignores
// that and keeps waiting, like a stage stuck in a call without a context.
type slowStage struct{ stubborn bool }

func (slowStage) Name() string { return "slow" }

func (slowStage) Plan(context.Context, *stages.Env) ([]stages.Change, error) {
	return []stages.Change{{Action: "create", Target: "something slow"}}, nil
}

func (s slowStage) Apply(ctx context.Context, e *stages.Env) error {
	e.Step("waiting")
	select {
	case <-ctx.Done():
	case <-time.After(time.Minute):
		return errors.New("never interrupted")
	}
	if !s.stubborn {
		return ctx.Err()
	}
	e.Step("ignoring the interruption")
	time.Sleep(time.Minute)
	return errors.New("not killed")
}

// waitStatus returns how a finished command ended.
func waitStatus(cmd *exec.Cmd) syscall.WaitStatus {
	return cmd.ProcessState.Sys().(syscall.WaitStatus)
}
