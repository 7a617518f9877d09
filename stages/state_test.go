package stages_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/internal/ui"
	"github.com/platform-bootstrap/bootstrap/stages"
)

func TestSessionLifecycle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	red := secrets.NewRedactor()
	s, err := stages.Open(dir, "up", red)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state dir: %v mode %v, want 0700", err, fi.Mode().Perm())
	}
	if _, err := stages.Open(dir, "plan", red); !errors.As(err, new(*statedir.LockedError)) {
		t.Fatalf("second Open = %v, want *LockedError", err)
	}
	const secret = "hvs.SessionSecretValue42"
	if err := s.Secrets.Put("vault/root-token", secret); err != nil {
		t.Fatal(err)
	}
	ui.NewLog(s.LogWriter()).Event(stages.Event{Type: stages.EventStep, Stage: "vault", Message: "using token " + secret, Time: time.Now()})
	results := []statedir.StageResult{{Name: "vault", Outcome: statedir.OutcomeFailed, Error: "bad token " + secret,
		Changes: []stages.Change{{Action: "create", Target: "token", Detail: secret}}}}
	if err := s.Close(results, fmt.Errorf("stage vault: bad token %s", secret)); err != nil {
		t.Fatal(err)
	}

	runs, err := statedir.LoadRuns(dir)
	if err != nil || len(runs) != 1 {
		t.Fatalf("LoadRuns = %v, %v; want one run", runs, err)
	}
	r := runs[0]
	if r.ID != s.RunID || r.Command != "up" || r.Outcome != "failed" || r.LogFile != s.LogPath || len(r.Stages) != 1 {
		t.Errorf("run record = %+v", r)
	}
	if r.Error != "stage vault: bad token <redacted>" || r.Stages[0].Error != "bad token <redacted>" || r.Stages[0].Changes[0].Detail != "<redacted>" {
		t.Errorf("run record not redacted: %+v", r)
	}
	for _, f := range []string{filepath.Join(dir, "runs", s.RunID+".json"), s.LogPath} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), secret) {
			t.Errorf("%s holds the secret:\n%s", f, b)
		}
	}
	log, _ := os.ReadFile(s.LogPath)
	if !strings.Contains(string(log), "[vault] using token <redacted>") {
		t.Errorf("log file = %q", log)
	}
	// Closed: the lock is free and its record cleared.
	s2, err := stages.Open(dir, "up", red)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Lock.Stale != nil {
		t.Errorf("after Close the next run sees a stale lock %v", s2.Lock.Stale)
	}
	s2.Close(nil, nil)
}

func TestSessionRemovesLeftoverTempFiles(t *testing.T) {
	dir := t.TempDir()
	left := []string{
		filepath.Join(dir, ".state.json.tmp-123"),
		filepath.Join(dir, "runs", ".20250101T000000.000Z-up.json.tmp-9"),
	}
	os.MkdirAll(filepath.Join(dir, "runs"), 0o700)
	for _, f := range left {
		os.WriteFile(f, []byte(`{"half`), 0o600)
	}
	keep := filepath.Join(dir, "notes.txt")
	os.WriteFile(keep, []byte("mine"), 0o600)
	s, err := stages.Open(dir, "up", secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(nil, nil)
	for _, f := range left {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s survived Open", f)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("Open removed an unrelated file: %v", err)
	}
}

// status and env open the state directory without the lock while an `up`
// may be in the middle of an atomic write: they must delete nothing. The
// lock holder removes what killed writes left.
func TestReadOnlyOpenKeepsTempsLockedOpenRemoves(t *testing.T) {
	dir := t.TempDir()
	red := secrets.NewRedactor()
	st, err := statedir.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SetOutput("vault_addr", "https://127.0.0.1:8200"); err != nil {
		t.Fatal(err)
	}
	store, err := secrets.Open(filepath.Join(dir, "secrets"), red)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put("vault/root-token", "hvs.ReadOnlyOpenToken"); err != nil {
		t.Fatal(err)
	}
	temps := []string{
		filepath.Join(dir, ".state.json.tmp-123"),
		filepath.Join(dir, "runs", ".20250101T000000.000Z-up.json.tmp-9"),
		filepath.Join(dir, "secrets", ".gossip.tmp-7"),
		filepath.Join(dir, "secrets", "vault", ".root-token.tmp-42"),
	}
	os.MkdirAll(filepath.Join(dir, "runs"), 0o700)
	for _, f := range temps {
		if err := os.WriteFile(f, []byte(`{"half`), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	state, ro, err := stages.OpenReadOnly(dir, secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	if got := state.Output("vault_addr"); got != "https://127.0.0.1:8200" {
		t.Errorf("read-only state output = %q", got)
	}
	if v, ok, err := ro.Get("vault/root-token"); err != nil || !ok || v != "hvs.ReadOnlyOpenToken" {
		t.Errorf("read-only store Get = %q, %v, %v", v, ok, err)
	}
	for _, f := range temps {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("read-only open removed %s: %v", f, err)
		}
	}

	s, err := stages.Open(dir, "up", red)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(nil, nil)
	for _, f := range temps {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s survived the locked Open (%v)", f, err)
		}
	}
	if v, ok, err := s.Secrets.Get("vault/root-token"); err != nil || !ok || v != "hvs.ReadOnlyOpenToken" {
		t.Errorf("after the locked Open, Get = %q, %v, %v", v, ok, err)
	}
}

func TestEmitRedacts(t *testing.T) {
	rec := &recorder{}
	env := newEnv(t, t.TempDir(), rec)
	const secret = "consul-bootstrap-8f14e45f"
	if err := env.Secrets.Put("consul/bootstrap-token", secret); err != nil {
		t.Fatal(err)
	}
	e := env.ForStage("consul")
	e.Step("using %s", secret)
	e.Logf("log %s", secret)
	e.Warnf("warn %s", secret)
	e.Emit(stages.Event{Type: stages.EventStageEnd, Error: "failed with " + secret,
		Changes: []stages.Change{{Action: "create", Target: "token " + secret, Detail: secret}}})
	e.Emit(stages.Event{Type: stages.EventRunEnd, Stages: []statedir.StageResult{{Name: "consul", Error: secret, Changes: []stages.Change{{Target: secret}}}}})
	events := rec.all()
	if len(events) != 5 {
		t.Fatalf("got %d events", len(events))
	}
	for _, ev := range events {
		if s := fmt.Sprintf("%+v", ev); strings.Contains(s, secret) || !strings.Contains(s, secrets.Redacted) {
			t.Errorf("event not redacted: %s", s)
		}
		if ev.Stage != "consul" || ev.Time.IsZero() {
			t.Errorf("event lacks stage or time: %+v", ev)
		}
	}
}

func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), ".tmp-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}
