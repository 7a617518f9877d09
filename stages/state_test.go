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
	"github.com/platform-bootstrap/bootstrap/stages"
)

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := stages.LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stage("vault"); st.Status != stages.StatusPending {
		t.Errorf("a stage never run is %q, want pending", st.Status)
	}
	if _, err := os.Stat(filepath.Join(dir, stages.StateFile)); !os.IsNotExist(err) {
		t.Fatal("loading an empty state wrote a file")
	}
	start := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.SetStage("vault", stages.StageState{Status: stages.StatusDone, Started: start, Finished: start.Add(time.Second), Changes: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetOutput(stages.OutVaultAddr, "https://127.0.1.1:8200"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, stages.StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state.json mode %v, want 0600", fi.Mode().Perm())
	}

	s2, err := stages.LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := s2.Stage("vault"); st.Status != stages.StatusDone || !st.Started.Equal(start) || st.Changes != 3 {
		t.Errorf("reloaded stage = %+v", st)
	}
	if got := s2.Output(stages.OutVaultAddr); got != "https://127.0.1.1:8200" {
		t.Errorf("reloaded output = %q", got)
	}

	// Writing what is already there must not touch the file.
	if err := s2.SetOutput(stages.OutVaultAddr, "https://127.0.1.1:8200"); err != nil {
		t.Fatal(err)
	}
	if err := s2.DeleteOutputs("never-set"); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(filepath.Join(dir, stages.StateFile))
	if !os.SameFile(fi, fi2) {
		t.Error("an unchanged output or a no-op delete rewrote state.json")
	}
	outs := s2.Outputs()
	outs["x"] = "mutating the copy"
	if s2.Output("x") != "" {
		t.Error("Outputs returned the state's own map")
	}

	if err := s2.DeleteOutputs(stages.OutVaultAddr); err != nil {
		t.Fatal(err)
	}
	if err := s2.Reset(); err != nil {
		t.Fatal(err)
	}
	s3, _ := stages.LoadState(dir)
	if s3.Stage("vault").Status != stages.StatusPending || len(s3.Outputs()) != 0 {
		t.Errorf("after Reset: %+v %v", s3.Stage("vault"), s3.Outputs())
	}
	if left := tempFiles(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestStateCorruptOrNewer(t *testing.T) {
	for _, tc := range []struct{ content, want string }{
		{`{"version": 1, "stages": {`, "is corrupt"},
		{``, "is corrupt"},
		{`{"version": 99, "stages": {}}`, "has version 99, newer than this bootstrap understands (1)"},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, stages.StateFile), []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := stages.LoadState(dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), filepath.Join(dir, stages.StateFile)) {
			t.Errorf("state %q: error %v, want it to name the file and say %q", tc.content, err, tc.want)
		}
	}
	// Fields the file does not have start empty rather than nil.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, stages.StateFile), []byte(`{"version": 1}`), 0o600)
	s, err := stages.LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetOutput("k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStage("a", stages.StageState{Status: stages.StatusDone}); err != nil {
		t.Fatal(err)
	}
}

func TestLockContention(t *testing.T) {
	dir := t.TempDir()
	l1, err := stages.AcquireLock(dir, "up")
	if err != nil {
		t.Fatal(err)
	}
	if l1.Stale != nil {
		t.Errorf("fresh lock reports a stale holder %v", l1.Stale)
	}
	// flock conflicts between two open files even inside one process.
	_, err = stages.AcquireLock(dir, "plan")
	var le *stages.LockedError
	if !errors.As(err, &le) {
		t.Fatalf("second AcquireLock = %v, want *LockedError", err)
	}
	host, _ := os.Hostname()
	if le.Holder.PID != os.Getpid() || le.Holder.Host != host || le.Holder.Command != "up" || time.Since(le.Holder.Started) > time.Minute {
		t.Errorf("holder = %+v, want this process on %s running up", le.Holder, host)
	}
	msg := err.Error()
	if !strings.Contains(msg, fmt.Sprintf("pid %d on %s (up, started ", os.Getpid(), host)) || !strings.Contains(msg, dir) {
		t.Errorf("LockedError message %q does not name the directory and the holder", msg)
	}
	if err := l1.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l1.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}
	// Released cleanly: the next holder sees no stale record.
	l2, err := stages.AcquireLock(dir, "plan")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Release()
	if l2.Stale != nil {
		t.Errorf("after a clean release the lock reports stale holder %v", l2.Stale)
	}
}

// A holder record left behind (its process died) is reported, and the lock
// is taken over.
func TestLockStaleRecord(t *testing.T) {
	dir := t.TempDir()
	dead := stages.LockHolder{PID: 999999, Host: "elsewhere", Started: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), Command: "up"}
	os.WriteFile(filepath.Join(dir, stages.LockFile), []byte(fmt.Sprintf(`{"pid":%d,"host":%q,"started":"2025-01-01T00:00:00Z","command":"up"}`, dead.PID, dead.Host)), 0o600)
	l, err := stages.AcquireLock(dir, "up")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if l.Stale == nil || *l.Stale != dead {
		t.Errorf("Stale = %v, want %v", l.Stale, dead)
	}
	b, _ := os.ReadFile(filepath.Join(dir, stages.LockFile))
	if !strings.Contains(string(b), fmt.Sprintf(`"pid":%d`, os.Getpid())) {
		t.Errorf("lock record %s does not name the new holder", b)
	}
}

// A run killed between writing its record and cutting the file leaves its
// record followed by the tail of a longer old one; the first line counts.
func TestLockRecordTorn(t *testing.T) {
	dir := t.TempDir()
	content := `{"pid":4242,"host":"h","started":"2025-01-01T00:00:00Z","command":"up"}` + "\n" + `r","started":"2024-01-01T00:00:00Z","command":"down with a long name"}` + "\n"
	os.WriteFile(filepath.Join(dir, stages.LockFile), []byte(content), 0o600)
	l, err := stages.AcquireLock(dir, "up")
	if err != nil {
		t.Fatal(err)
	}
	if l.Stale == nil || l.Stale.PID != 4242 || l.Stale.Command != "up" {
		t.Errorf("Stale = %+v, want pid 4242", l.Stale)
	}
	// The new record replaced everything, tail included.
	b, _ := os.ReadFile(filepath.Join(dir, stages.LockFile))
	if strings.Count(string(b), "\n") != 1 || strings.Contains(string(b), "long name") || !strings.Contains(string(b), fmt.Sprintf(`"pid":%d,`, os.Getpid())) {
		t.Errorf("lock file after AcquireLock = %q", b)
	}
	l.Release()
	if b, _ := os.ReadFile(filepath.Join(dir, stages.LockFile)); len(b) != 0 {
		t.Errorf("Release left %q", b)
	}
	// A holder that has not written its record yet is not "pid 0".
	if s := (stages.LockHolder{}).String(); strings.Contains(s, "pid 0") {
		t.Errorf("empty holder reads %q", s)
	}
}

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
	if _, err := stages.Open(dir, "plan", red); !errors.As(err, new(*stages.LockedError)) {
		t.Fatalf("second Open = %v, want *LockedError", err)
	}
	const secret = "hvs.SessionSecretValue42"
	if err := s.Secrets.Put("vault/root-token", secret); err != nil {
		t.Fatal(err)
	}
	s.Event(stages.Event{Type: stages.EventStep, Stage: "vault", Message: "using token " + secret, Time: time.Now()})
	results := []stages.StageResult{{Name: "vault", Outcome: stages.OutcomeFailed, Error: "bad token " + secret,
		Changes: []stages.Change{{Action: "create", Target: "token", Detail: secret}}}}
	if err := s.Close(results, fmt.Errorf("stage vault: bad token %s", secret)); err != nil {
		t.Fatal(err)
	}

	runs, err := stages.LoadRuns(dir)
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
	st, err := stages.LoadState(dir)
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

func TestRunHistoryPruned(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "logs"), 0o700)
	for i := range 55 {
		id := fmt.Sprintf("20250101T0000%02d.000Z-up", i)
		os.WriteFile(filepath.Join(dir, "logs", id+".log"), nil, 0o600)
		if err := stages.SaveRun(dir, stages.RunRecord{ID: id, Command: "up"}); err != nil {
			t.Fatal(err)
		}
	}
	runs, err := stages.LoadRuns(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 50 || runs[0].ID != "20250101T000005.000Z-up" || runs[49].ID != "20250101T000054.000Z-up" {
		t.Fatalf("kept %d runs, %s … %s; want the newest 50", len(runs), runs[0].ID, runs[len(runs)-1].ID)
	}
	if _, err := os.Stat(filepath.Join(dir, "logs", "20250101T000004.000Z-up.log")); !os.IsNotExist(err) {
		t.Error("the log of a pruned run was kept")
	}
	if _, err := os.Stat(filepath.Join(dir, "logs", "20250101T000005.000Z-up.log")); err != nil {
		t.Error("the log of a kept run was removed")
	}
}

func TestPlainLine(t *testing.T) {
	ts := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	holder := &stages.LockHolder{PID: 42, Host: "ci", Started: ts, Command: "up"}
	for _, tc := range []struct {
		e    stages.Event
		want string
	}{
		{stages.Event{Time: ts, Type: stages.EventRunStart, Command: "up", Run: "r1"}, "2025-03-04T05:06:07Z up: run r1\n"},
		{stages.Event{Time: ts, Type: stages.EventRunStart, Command: "up", Run: "r1", Stale: holder},
			"2025-03-04T05:06:07Z up: run r1\n2025-03-04T05:06:07Z warning: the previous run (pid 42 on ci (up, started 2025-03-04T05:06:07Z)) ended without releasing the lock; taking it over\n"},
		{stages.Event{Time: ts, Type: stages.EventStageStart, Stage: "vault"}, "2025-03-04T05:06:07Z [vault] started\n"},
		{stages.Event{Time: ts, Type: stages.EventPlan, Stage: "pki", Changes: []stages.Change{{Action: "create", Target: "mount consul/root-ca"}, {Action: "update", Target: "role", Detail: "ttl"}, {Action: "delete", Target: "old"}}},
			"2025-03-04T05:06:07Z [pki] 3 change(s):\n2025-03-04T05:06:07Z [pki]   + create mount consul/root-ca\n2025-03-04T05:06:07Z [pki]   ~ update role (ttl)\n2025-03-04T05:06:07Z [pki]   - delete old\n"},
		{stages.Event{Time: ts, Type: stages.EventWarning, Stage: "nomad", Message: "slow"}, "2025-03-04T05:06:07Z [nomad] warning: slow\n"},
		{stages.Event{Time: ts, Type: stages.EventStageEnd, Stage: "vault", Outcome: stages.OutcomeFailed, Duration: 1234 * time.Millisecond, Error: "boom"}, "2025-03-04T05:06:07Z [vault] failed in 1.23s: boom\n"},
		{stages.Event{Time: ts, Type: stages.EventRunEnd, Command: "up", Duration: 2 * time.Second}, "2025-03-04T05:06:07Z up finished in 2s\n"},
	} {
		if got := stages.PlainLine(tc.e); got != tc.want {
			t.Errorf("PlainLine(%s) =\n%q\nwant\n%q", tc.e.Type, got, tc.want)
		}
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
	e.Emit(stages.Event{Type: stages.EventRunEnd, Stages: []stages.StageResult{{Name: "consul", Error: secret, Changes: []stages.Change{{Target: secret}}}}})
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
