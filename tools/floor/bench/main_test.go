package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
)

// The stage times come from `bootstrap history --output json`: the newest
// run of the command, whatever the order of the records.
func TestLastStages(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	runs := []statedir.RunRecord{
		{Command: "up", Started: t0.Add(time.Minute), Stages: []statedir.StageResult{{Name: "consul", Duration: 3 * time.Second}}},
		{Command: "up", Started: t0, Stages: []statedir.StageResult{{Name: "consul", Duration: 9 * time.Second}}},
		{Command: "down", Started: t0.Add(2 * time.Minute), Stages: []statedir.StageResult{{Name: "jobs", Duration: time.Second}, {Name: "provision", Duration: 2 * time.Second}}},
	}
	b, err := json.Marshal(runs)
	if err != nil {
		t.Fatal(err)
	}
	if got := lastStages(b, "up"); len(got) != 1 || got[0] != (phase{"consul", 3 * time.Second}) {
		t.Errorf("up: %v, want the newest run's consul 3s", got)
	}
	if got := lastStages(b, "down"); len(got) != 2 || got[1] != (phase{"provision", 2 * time.Second}) {
		t.Errorf("down: %v, want jobs and provision", got)
	}
	if got := lastStages(b, "plan"); got != nil {
		t.Errorf("plan: %v, want none", got)
	}
	if got := lastStages([]byte("not json"), "up"); got != nil {
		t.Errorf("bad output: %v, want none", got)
	}
}

// The report subtracts verify for the ratio the floor can be compared with,
// says "failed" rather than a time for what failed, and lists its errors.
func TestReport(t *testing.T) {
	r := result{
		clients:     2,
		floor:       40 * time.Second,
		floorPhases: []phase{{"vault", 3 * time.Second}},
		up:          100 * time.Second,
		stages:      []phase{{"consul", 20 * time.Second}, {"verify", 20 * time.Second}},
		down:        2 * time.Second,
		downStages:  []phase{{"jobs", time.Second}},
		converged:   []time.Duration{400 * time.Millisecond, 500 * time.Millisecond, 900 * time.Millisecond},
		repairErr:   errors.New("client-1 never came back"),
	}
	var b strings.Builder
	report(&b, r, true)
	out := b.String()
	for _, want := range []string{
		"ratio up/floor     2.50\n",
		"up without verify  80.0s (ratio 2.00)\n",
		"repair one client  failed",
		"converged up       0.50s (median of 3 in a row; 0.40–0.90s)\n",
		"down               2.0s (jobs 1.00s)\n",
		"consul         20.00s   20.0%   vault         3.00s    7.5%\n",
		"error: client-1 never came back\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	r.upErr = errors.New("up failed")
	b.Reset()
	report(&b, r, true)
	if out := b.String(); !strings.Contains(out, "ratio up/floor     -\n") || strings.Contains(out, "without verify") || strings.Contains(out, "repair") {
		t.Errorf("a failed up still reports a ratio or day-2 figures:\n%s", out)
	}
}
