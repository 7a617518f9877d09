package ui

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/bubbles/spinner"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

func TestResolve(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out")) // not a terminal
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t.Setenv("CI", "")
	for in, want := range map[string]string{"": ModePlain, "auto": ModePlain, "plain": ModePlain, "json": ModeJSON, "tty": ModeTTY} {
		if got, err := Resolve(in, f); err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	t.Setenv("CI", "true")
	if got, _ := Resolve("auto", os.Stdout); got != ModePlain {
		t.Errorf("CI=true resolves auto to %q", got)
	}
	if _, err := Resolve("fancy", f); err == nil || err.Error() != `--output "fancy": use auto, tty, plain or json` {
		t.Errorf("Resolve(fancy) error = %v", err)
	}
}

// events is a run's worth of events, as the runner emits them.
func events() []stages.Event {
	ts := time.Date(2025, 5, 6, 7, 8, 9, 0, time.UTC)
	return []stages.Event{
		{Time: ts, Type: stages.EventRunStart, Command: "up", Run: "r1", Stale: &statedir.LockHolder{PID: 7, Host: "h", Started: ts, Command: "up"}},
		{Time: ts, Type: stages.EventStageStart, Stage: "keys"},
		{Time: ts, Type: stages.EventPlan, Stage: "keys", Changes: []stages.Change{{Action: "generate", Target: "ssh key"}, {Action: "generate", Target: "gossip key"}}},
		{Time: ts, Type: stages.EventStep, Stage: "keys", Message: "writing keys"},
		{Time: ts, Type: stages.EventLog, Stage: "keys", Message: "detail for the log only"},
		{Time: ts, Type: stages.EventWarning, Stage: "keys", Message: "entropy low"},
		{Time: ts, Type: stages.EventStageEnd, Stage: "keys", Outcome: statedir.OutcomeChanged, Duration: time.Second, Changes: []stages.Change{{Action: "generate", Target: "ssh key"}}},
		{Time: ts, Type: stages.EventStageStart, Stage: "vault"},
		{Time: ts, Type: stages.EventStageEnd, Stage: "vault", Outcome: statedir.OutcomeFailed, Duration: 2 * time.Second, Error: "vault sealed"},
		{Time: ts, Type: stages.EventRunEnd, Command: "up", Duration: 3 * time.Second, Error: "stage vault: vault sealed",
			Stages: []statedir.StageResult{{Name: "keys", Outcome: statedir.OutcomeChanged}, {Name: "vault", Outcome: statedir.OutcomeFailed}}},
	}
}

var timestamped = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ `)

func TestPlainSink(t *testing.T) {
	var b bytes.Buffer
	s := New(ModePlain, &b, nil)
	for _, e := range events() {
		s.Event(e)
	}
	s.Close()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	for _, l := range lines {
		if !timestamped.MatchString(l) {
			t.Errorf("line without a timestamp: %q", l)
		}
	}
	out := b.String()
	if strings.Contains(out, "detail for the log only") {
		t.Error("log events reached the plain output")
	}
	for _, want := range []string{
		"2025-05-06T07:08:09Z warning: the previous run (pid 7 on h (up, started 2025-05-06T07:08:09Z)) ended without releasing the lock; taking it over",
		"[keys] 2 change(s):", "[keys]   + generate ssh key", "[keys] writing keys", "[keys] warning: entropy low",
		"[keys] changed in 1s", "[vault] failed in 2s: vault sealed", "up finished in 3s with error: stage vault: vault sealed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plain output lacks %q:\n%s", want, out)
		}
	}
}

func TestJSONSink(t *testing.T) {
	var b bytes.Buffer
	s := New(ModeJSON, &b, nil)
	in := events()
	for _, e := range in {
		s.Event(e)
	}
	s.Close()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != len(in) {
		t.Fatalf("%d lines for %d events", len(lines), len(in))
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, l)
		}
		if m["type"] != string(in[i].Type) || m["time"] != "2025-05-06T07:08:09Z" {
			t.Errorf("line %d: type %v time %v", i, m["type"], m["time"])
		}
		var back stages.Event
		if err := json.Unmarshal([]byte(l), &back); err != nil {
			t.Fatal(err)
		}
		if back.Stage != in[i].Stage || back.Outcome != in[i].Outcome || back.Error != in[i].Error || len(back.Changes) != len(in[i].Changes) || back.Duration != in[i].Duration {
			t.Errorf("line %d does not round-trip: %+v", i, back)
		}
	}
	var first map[string]any
	json.Unmarshal([]byte(lines[0]), &first)
	if st, ok := first["stale_lock"].(map[string]any); !ok || st["pid"] != float64(7) {
		t.Errorf("run_start has no stale_lock pid: %s", lines[0])
	}
}

// The live view's model, driven by events without a terminal.
func TestLiveModel(t *testing.T) {
	m := model{spin: spinner.New(), rows: map[string]*row{}}
	for _, n := range []string{"keys", "vault", "pki"} {
		m.order = append(m.order, n)
		m.rows[n] = &row{status: "pending"}
	}
	var cur = m
	for _, e := range events()[:8] { // up to vault's start
		next, _ := cur.Update(e)
		cur = next.(model)
	}
	view := cur.View()
	if !strings.Contains(view, "✓ keys") || !strings.Contains(view, "changed, 1 change(s)") {
		t.Errorf("finished stage not shown as done:\n%s", view)
	}
	if !strings.Contains(view, "vault") || cur.rows["vault"].status != "running" {
		t.Errorf("running stage:\n%s", view)
	}
	if cur.rows["pki"].status != "pending" {
		t.Errorf("pki = %+v", cur.rows["pki"])
	}
	next, _ := cur.Update(events()[8])
	cur = next.(model)
	if view := cur.View(); !strings.Contains(view, "✗ vault") || !strings.Contains(view, "failed: vault sealed") {
		t.Errorf("failed stage:\n%s", view)
	}
	next, _ = cur.Update(stages.Event{Type: stages.EventStageEnd, Stage: "pki", Outcome: statedir.OutcomeInterrupted, Error: "interrupted: signal"})
	cur = next.(model)
	if view := cur.View(); !strings.Contains(view, "! pki") || strings.Contains(view, "✗ pki") {
		t.Errorf("an interrupted stage looks failed:\n%s", view)
	}
	// A stage the list did not know (e.g. from a plan) is added, not dropped.
	next, _ = cur.Update(stages.Event{Type: stages.EventStageStart, Stage: "extra", Time: time.Now()})
	cur = next.(model)
	if cur.order[len(cur.order)-1] != "extra" {
		t.Errorf("order = %v", cur.order)
	}
	// run_end has no stage and must not crash the view.
	next, _ = cur.Update(events()[9])
	if next.(model).View() == "" {
		t.Error("empty view")
	}
}

// The live sink runs a real bubbletea program; it must start and stop
// without a terminal and print the plan above the list.
func TestLiveSinkStartsAndStops(t *testing.T) {
	var b bytes.Buffer
	s := New(ModeTTY, &b, []string{"keys", "vault"})
	for _, e := range events() {
		s.Event(e)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	// Every line above the list is there, in the order of the events, even
	// those sent just before Close.
	out := b.String()
	var at []int
	for _, want := range []string{"the previous run (pid 7 on h", "keys: 2 change(s)\r\n    + generate ssh key\r\n    + generate gossip key", "warning: entropy low"} {
		i := strings.Index(out, want)
		if i < 0 {
			t.Fatalf("live output lacks %q:\n%q", want, out)
		}
		at = append(at, i)
	}
	if !slices.IsSorted(at) {
		t.Errorf("lines out of order (%v):\n%q", at, out)
	}
}

func TestPlainLine(t *testing.T) {
	ts := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	holder := &statedir.LockHolder{PID: 42, Host: "ci", Started: ts, Command: "up"}
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
		{stages.Event{Time: ts, Type: stages.EventStageEnd, Stage: "vault", Outcome: statedir.OutcomeFailed, Duration: 1234 * time.Millisecond, Error: "boom"}, "2025-03-04T05:06:07Z [vault] failed in 1.23s: boom\n"},
		{stages.Event{Time: ts, Type: stages.EventRunEnd, Command: "up", Duration: 2 * time.Second}, "2025-03-04T05:06:07Z up finished in 2s\n"},
	} {
		if got := PlainLine(tc.e); got != tc.want {
			t.Errorf("PlainLine(%s) =\n%q\nwant\n%q", tc.e.Type, got, tc.want)
		}
	}
}
