package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

var stamped = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ `)

// checkJSONLines asserts that every line of out is a JSON object with a
// type, starting with run_start and ending with run_end.
func checkJSONLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("JSON output does not end with a newline: %q", out)
	}
	var events []map[string]any
	for i, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d is not JSON (%v): %q", i+1, err, l)
		}
		if typ, _ := m["type"].(string); typ == "" {
			t.Errorf("line %d has no type: %q", i+1, l)
		}
		if _, ok := m["time"].(string); !ok {
			t.Errorf("line %d has no time: %q", i+1, l)
		}
		events = append(events, m)
	}
	if len(events) < 2 || events[0]["type"] != string(stages.EventRunStart) || events[len(events)-1]["type"] != string(stages.EventRunEnd) {
		t.Errorf("events do not run from run_start to run_end:\n%s", out)
	}
	return events
}

// checkPlainLines asserts that every event line is timestamped: everything
// before the summary, which follows an empty line.
func checkPlainLines(t *testing.T, out string) {
	t.Helper()
	events, _, _ := strings.Cut(out, "\n\n")
	lines := strings.Split(events, "\n")
	if len(lines) < 2 {
		t.Fatalf("plain output has no events:\n%s", out)
	}
	for _, l := range lines {
		if !stamped.MatchString(l) {
			t.Errorf("plain line without a timestamp: %q", l)
		}
	}
}

// Through the real binary, with the platform's own stages (whatever they
// do on this machine, the format holds).
func TestOutputModesOfTheBinary(t *testing.T) {
	cfg := minimalConfig(t)
	for _, cmd := range []string{"plan", "up"} {
		state := filepath.Join(t.TempDir(), "state")
		r := runIn(t, filepath.Dir(cfg), nil, cmd, "-c", cfg, "--state-dir", state, "--output", "json", "--only", "keys")
		if r.code == exitUsage || r.code == exitLocked {
			t.Fatalf("%s: exit %d: %s", cmd, r.code, r.stderr)
		}
		checkJSONLines(t, r.stdout)

		state = filepath.Join(t.TempDir(), "state")
		r = runIn(t, filepath.Dir(cfg), nil, cmd, "-c", cfg, "--state-dir", state, "--output", "plain", "--only", "keys")
		checkPlainLines(t, r.stdout)
		if !strings.Contains(r.stdout, " "+cmd+": run ") || !strings.Contains(r.stdout, "Log: "+filepath.Join(state, "logs")) {
			t.Errorf("%s plain output:\n%s", cmd, r.stdout)
		}
		// Not a terminal: auto is plain.
		r = runIn(t, filepath.Dir(cfg), nil, cmd, "-c", cfg, "--state-dir", state, "--only", "keys")
		checkPlainLines(t, r.stdout)
	}
}

// execute runs one command in this process with toy stages, its output in
// files, and returns stdout, stderr and the exit code.
func execute(t *testing.T, output, cfg, state string, all ...stages.Stage) (string, string, int) {
	t.Helper()
	dir := t.TempDir()
	stdout, _ := os.Create(filepath.Join(dir, "stdout"))
	stderr, _ := os.Create(filepath.Join(dir, "stderr"))
	defer stdout.Close()
	defer stderr.Close()
	g := &globals{stdin: os.Stdin, stdout: stdout, stderr: stderr, config: cfg, stateDir: state, output: output, autoApprove: true}
	err := g.execute("up", func(ctx context.Context, r *stages.Runner, sel stages.Selection, _ *stages.Session) ([]statedir.StageResult, error) {
		r.Stages = all
		return r.Up(ctx, sel)
	})
	code := exitCode(err, stderr)
	o, _ := os.ReadFile(stdout.Name())
	e, _ := os.ReadFile(stderr.Name())
	return string(o), string(e), code
}

// genStage generates a token and then does everything a careless stage
// could do to print it.
type genStage struct{}

func (genStage) Name() string { return "gen" }

func (genStage) Plan(_ context.Context, e *stages.Env) ([]stages.Change, error) {
	if _, ok, err := e.Secrets.Get("test/token"); err != nil || ok {
		return nil, err
	}
	return []stages.Change{{Action: "generate", Target: "test token"}}, nil
}

func (genStage) Apply(_ context.Context, e *stages.Env) error {
	b := make([]byte, 16)
	rand.Read(b)
	tok := "tok-" + hex.EncodeToString(b)
	if err := e.Secrets.Put("test/token", tok); err != nil {
		return err
	}
	e.Step("generated %s", tok)
	e.Warnf("the token is %s", tok)
	e.Logf("log: %s", tok)
	fmt.Fprintf(e.Log, "subprocess output with %s\n", tok)
	return nil
}

// leakyStage puts the token in its plan and its error.
type leakyStage struct{}

func (leakyStage) Name() string { return "leaky" }

func (leakyStage) Plan(_ context.Context, e *stages.Env) ([]stages.Change, error) {
	tok, _, _ := e.Secrets.Get("test/token")
	return []stages.Change{{Action: "update", Target: "token " + tok, Detail: tok}}, nil
}

func (leakyStage) Apply(_ context.Context, e *stages.Env) error {
	tok, _, _ := e.Secrets.Get("test/token")
	return fmt.Errorf("server refused token %s", tok)
}

// A secret generated during the run never reaches the terminal, the JSON
// stream, stderr, the log, the run history or the state file.
func TestSecretsNeverPrinted(t *testing.T) {
	for _, mode := range []string{"plain", "json"} {
		t.Run(mode, func(t *testing.T) {
			cfg := minimalConfig(t)
			state := filepath.Join(t.TempDir(), "state")
			stdout, stderr, code := execute(t, mode, cfg, state, genStage{}, leakyStage{})
			tok, err := os.ReadFile(filepath.Join(state, "secrets", "test", "token"))
			if err != nil || len(tok) < 20 {
				t.Fatalf("token not stored: %q, %v", tok, err)
			}
			if code != exitFailure || !strings.HasPrefix(stderr, "Error: stage leaky: server refused token <redacted>") {
				t.Errorf("exit %d, stderr %q", code, stderr)
			}
			if mode == "json" {
				events := checkJSONLines(t, stdout)
				var warned bool
				for _, e := range events {
					if e["type"] == string(stages.EventWarning) && e["message"] == "the token is <redacted>" {
						warned = true
					}
				}
				if !warned {
					t.Errorf("no redacted warning event in\n%s", stdout)
				}
			} else {
				checkPlainLines(t, stdout)
				if !strings.Contains(stdout, "[gen] generated <redacted>") || !strings.Contains(stdout, "[leaky] failed in") {
					t.Errorf("plain output:\n%s", stdout)
				}
			}
			places := map[string]string{"stdout": stdout, "stderr": stderr}
			filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && !strings.HasPrefix(p, filepath.Join(state, "secrets")) {
					b, _ := os.ReadFile(p)
					places[p] = string(b)
				}
				return nil
			})
			for where, text := range places {
				if strings.Contains(text, string(tok)) {
					t.Errorf("the secret is in %s:\n%s", where, text)
				}
			}
			logs, _ := filepath.Glob(filepath.Join(state, "logs", "*.log"))
			if len(logs) != 1 {
				t.Fatalf("logs: %v", logs)
			}
			if !strings.Contains(places[logs[0]], "subprocess output with <redacted>") {
				t.Errorf("the log lacks the subprocess output:\n%s", places[logs[0]])
			}
		})
	}
}
