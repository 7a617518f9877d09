package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
)

func TestHistory(t *testing.T) {
	cfg := minimalConfig(t)
	state := filepath.Join(t.TempDir(), "state")
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	for _, r := range []statedir.RunRecord{
		{ID: "20261201T090000.000Z-up", Command: "up", Started: t0, Finished: t0.Add(138 * time.Second), Outcome: "ok",
			Stages: []statedir.StageResult{
				{Name: "keys", Outcome: statedir.OutcomeChanged, Changes: []reconcile.Change{{Action: reconcile.Generate, Target: "ssh key"}}},
				{Name: "vault", Outcome: statedir.OutcomeChanged},
				{Name: "jobs", Outcome: statedir.OutcomeUnchanged},
			}},
		{ID: "20261201T100000.000Z-up", Command: "up", Started: t0.Add(time.Hour), Finished: t0.Add(time.Hour + 5*time.Second), Outcome: "failed",
			Error: "stage jobs: grafana is not healthy",
			Stages: []statedir.StageResult{
				{Name: "keys", Outcome: statedir.OutcomeUnchanged},
				{Name: "jobs", Outcome: statedir.OutcomeFailed, Error: "grafana is not healthy"},
			}},
		{ID: "20261202T080000.000Z-plan", Command: "plan", Started: t0.Add(23 * time.Hour), Finished: t0.Add(23*time.Hour + time.Second), Outcome: "ok",
			Stages: []statedir.StageResult{{Name: "keys", Outcome: statedir.OutcomeUnchanged}}},
	} {
		r.LogFile = filepath.Join(state, "logs", r.ID+".log")
		if err := statedir.SaveRun(state, r); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) result {
		t.Helper()
		return runIn(t, filepath.Dir(cfg), nil, append([]string{"-c", cfg, "--state-dir", state}, args...)...)
	}

	r := run("history")
	if r.code != 0 {
		t.Fatalf("history: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 {
		t.Fatalf("history: want a header and 3 runs, oldest first:\n%s", r.stdout)
	}
	for i, want := range []string{
		"RUN",
		"20261201T090000.000Z-up    up       " + t0.Local().Format(time.DateTime) + "  2m18s     ok       changed: keys, vault",
		"failed   failed: jobs",
		"plan     " + t0.Add(23*time.Hour).Local().Format(time.DateTime) + "  1s        ok       no changes",
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d = %q, want it to contain %q", i, lines[i], want)
		}
	}

	r = run("history", "20261201T10")
	for _, want := range []string{"run 20261201T100000.000Z-up: failed", "error: stage jobs: grafana is not healthy", "jobs (failed):", "log: " + filepath.Join(state, "logs", "20261201T100000.000Z-up.log")} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("history RUN: exit %d, want %q in\n%s%s", r.code, want, r.stdout, r.stderr)
		}
	}
	if r = run("history", "last"); !strings.Contains(r.stdout, "run 20261202T080000.000Z-plan: ok") {
		t.Errorf("history last:\n%s%s", r.stdout, r.stderr)
	}
	if r = run("history", "--output", "json", "20261201T09"); r.code == 0 {
		var rec statedir.RunRecord
		if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil || rec.ID != "20261201T090000.000Z-up" || len(rec.Stages[0].Changes) != 1 {
			t.Errorf("history --output json RUN = %+v (%v)\n%s", rec, err, r.stdout)
		}
	} else {
		t.Errorf("history --output json RUN: exit %d\n%s", r.code, r.stderr)
	}
	if r = run("history", "--output", "json"); r.code == 0 {
		var recs []statedir.RunRecord
		if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil || len(recs) != 3 {
			t.Errorf("history --output json: %d runs (%v)\n%s", len(recs), err, r.stdout)
		}
	}
	if r = run("history", "2026"); r.code != 2 || !strings.Contains(r.stderr, `"2026" names 3 runs`) {
		t.Errorf("an ambiguous prefix: exit %d\n%s", r.code, r.stderr)
	}
	if r = run("history", "nope"); r.code != 2 || !strings.Contains(r.stderr, `no run "nope"`) {
		t.Errorf("an unknown run: exit %d\n%s", r.code, r.stderr)
	}
}
