package statedir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := s.Stage("vault"); st.Status != StatusPending {
		t.Errorf("a stage never run is %q, want pending", st.Status)
	}
	if _, err := os.Stat(filepath.Join(dir, StateFile)); !os.IsNotExist(err) {
		t.Fatal("loading an empty state wrote a file")
	}
	start := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.SetStage("vault", StageState{Status: StatusDone, Started: start, Finished: start.Add(time.Second), Changes: 3}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetOutput("vault_addr", "https://127.0.1.1:8200"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetNote("vault", "n", "v"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state.json mode %v, want 0600", fi.Mode().Perm())
	}

	s2, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := s2.Stage("vault"); st.Status != StatusDone || !st.Started.Equal(start) || st.Changes != 3 {
		t.Errorf("reloaded stage = %+v", st)
	}
	if got := s2.Output("vault_addr"); got != "https://127.0.1.1:8200" {
		t.Errorf("reloaded output = %q", got)
	}

	// Writing what is already there must not touch the file.
	if err := s2.SetOutput("vault_addr", "https://127.0.1.1:8200"); err != nil {
		t.Fatal(err)
	}
	if err := s2.DeleteOutputs("never-set"); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(filepath.Join(dir, StateFile))
	if !os.SameFile(fi, fi2) {
		t.Error("an unchanged output or a no-op delete rewrote state.json")
	}
	outs := s2.Outputs()
	outs["x"] = "mutating the copy"
	if s2.Output("x") != "" {
		t.Error("Outputs returned the state's own map")
	}

	if err := s2.DeleteOutputs("vault_addr"); err != nil {
		t.Fatal(err)
	}
	if err := s2.Reset(); err != nil {
		t.Fatal(err)
	}
	s3, _ := Load(dir)
	if s3.Stage("vault").Status != StatusPending || len(s3.Outputs()) != 0 {
		t.Errorf("after Reset: %+v %v", s3.Stage("vault"), s3.Outputs())
	}
	if left := tempFiles(t, dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// Notes are per stage, apart from the outputs, written only when they
// change, and gone after Reset. Notes an older bootstrap kept among the
// outputs are moved to their stage.
func TestNotes(t *testing.T) {
	dir := t.TempDir()
	legacy := `{"version": 1, "outputs": {"vault_addr": "https://a", "verified": "2025-01-01T00:00:00Z",
		"vault_approle_web_role_id": "r", "vault_approle_web_secret_id_accessor": "acc",
		"consul_agent_token_server-1": "acc@id"}}`
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Outputs(), map[string]string{"vault_addr": "https://a", "vault_approle_web_role_id": "r"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("outputs after loading an old state = %v, want %v", got, want)
	}
	for _, n := range [][3]string{{"verify", "verified", "2025-01-01T00:00:00Z"}, {"pki", "vault_approle_web_secret_id_accessor", "acc"}, {"consul", "consul_agent_token_server-1", "acc@id"}} {
		if got := s.Note(n[0], n[1]); got != n[2] {
			t.Errorf("note %s/%s = %q, want %q", n[0], n[1], got, n[2])
		}
	}
	if s.Note("pki", "verified") != "" {
		t.Error("a note of one stage is visible to another")
	}
	if err := s.SetNote("verify", "verified", "later"); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(dir, StateFile))
	if err := s.SetNote("verify", "verified", "later"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteNotes("verify", "never-set"); err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(filepath.Join(dir, StateFile)); !os.SameFile(fi, fi2) {
		t.Error("an unchanged note or a no-op delete rewrote state.json")
	}
	s2, _ := Load(dir)
	if s2.Note("verify", "verified") != "later" || s2.Output("verified") != "" {
		t.Errorf("reloaded note = %q, output %q", s2.Note("verify", "verified"), s2.Output("verified"))
	}
	if err := s2.DeleteNotes("pki", "vault_approle_web_secret_id_accessor"); err != nil {
		t.Fatal(err)
	}
	if s2.Note("pki", "vault_approle_web_secret_id_accessor") != "" {
		t.Error("DeleteNotes kept the note")
	}
	if err := s2.Reset(); err != nil {
		t.Fatal(err)
	}
	if s3, _ := Load(dir); s3.Note("consul", "consul_agent_token_server-1") != "" {
		t.Error("Reset kept a note")
	}
}

func TestStateCorruptOrNewer(t *testing.T) {
	for _, tc := range []struct{ content, want string }{
		{`{"version": 1, "stages": {`, "is corrupt"},
		{``, "is corrupt"},
		{`{"version": 99, "stages": {}}`, "has version 99, newer than this bootstrap understands (1)"},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(dir)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), filepath.Join(dir, StateFile)) {
			t.Errorf("state %q: error %v, want it to name the file and say %q", tc.content, err, tc.want)
		}
	}
	// Fields the file does not have start empty rather than nil.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, StateFile), []byte(`{"version": 1}`), 0o600)
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetOutput("k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetStage("a", StageState{Status: StatusDone}); err != nil {
		t.Fatal(err)
	}
}

func TestLockContention(t *testing.T) {
	dir := t.TempDir()
	l1, err := AcquireLock(dir, "up")
	if err != nil {
		t.Fatal(err)
	}
	if l1.Stale != nil {
		t.Errorf("fresh lock reports a stale holder %v", l1.Stale)
	}
	// flock conflicts between two open files even inside one process.
	_, err = AcquireLock(dir, "plan")
	var le *LockedError
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
	l2, err := AcquireLock(dir, "plan")
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
	dead := LockHolder{PID: 999999, Host: "elsewhere", Started: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), Command: "up"}
	os.WriteFile(filepath.Join(dir, LockFile), []byte(fmt.Sprintf(`{"pid":%d,"host":%q,"started":"2025-01-01T00:00:00Z","command":"up"}`, dead.PID, dead.Host)), 0o600)
	l, err := AcquireLock(dir, "up")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if l.Stale == nil || *l.Stale != dead {
		t.Errorf("Stale = %v, want %v", l.Stale, dead)
	}
	b, _ := os.ReadFile(filepath.Join(dir, LockFile))
	if !strings.Contains(string(b), fmt.Sprintf(`"pid":%d`, os.Getpid())) {
		t.Errorf("lock record %s does not name the new holder", b)
	}
}

// A run killed between writing its record and cutting the file leaves its
// record followed by the tail of a longer old one; the first line counts.
func TestLockRecordTorn(t *testing.T) {
	dir := t.TempDir()
	content := `{"pid":4242,"host":"h","started":"2025-01-01T00:00:00Z","command":"up"}` + "\n" + `r","started":"2024-01-01T00:00:00Z","command":"down with a long name"}` + "\n"
	os.WriteFile(filepath.Join(dir, LockFile), []byte(content), 0o600)
	l, err := AcquireLock(dir, "up")
	if err != nil {
		t.Fatal(err)
	}
	if l.Stale == nil || l.Stale.PID != 4242 || l.Stale.Command != "up" {
		t.Errorf("Stale = %+v, want pid 4242", l.Stale)
	}
	// The new record replaced everything, tail included.
	b, _ := os.ReadFile(filepath.Join(dir, LockFile))
	if strings.Count(string(b), "\n") != 1 || strings.Contains(string(b), "long name") || !strings.Contains(string(b), fmt.Sprintf(`"pid":%d,`, os.Getpid())) {
		t.Errorf("lock file after AcquireLock = %q", b)
	}
	l.Release()
	if b, _ := os.ReadFile(filepath.Join(dir, LockFile)); len(b) != 0 {
		t.Errorf("Release left %q", b)
	}
	// A holder that has not written its record yet is not "pid 0".
	if s := (LockHolder{}).String(); strings.Contains(s, "pid 0") {
		t.Errorf("empty holder reads %q", s)
	}
}

func TestRunHistoryPruned(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "logs"), 0o700)
	for i := range 55 {
		id := fmt.Sprintf("20250101T0000%02d.000Z-up", i)
		os.WriteFile(filepath.Join(dir, "logs", id+".log"), nil, 0o600)
		if err := SaveRun(dir, RunRecord{ID: id, Command: "up"}); err != nil {
			t.Fatal(err)
		}
	}
	runs, err := LoadRuns(dir)
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
