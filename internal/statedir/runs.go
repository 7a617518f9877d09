package statedir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
)

// RunRecord is the history entry of one run, kept in runs/<id>.json next to
// its full log in logs/<id>.log.
type RunRecord struct {
	ID       string        `json:"id"`
	Command  string        `json:"command"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished"`
	Outcome  string        `json:"outcome"`
	Error    string        `json:"error,omitempty"`
	Stages   []StageResult `json:"stages"`
	LogFile  string        `json:"log_file"`
}

// StageResult is one stage's outcome in a run.
type StageResult struct {
	Name     string             `json:"name"`
	Outcome  Outcome            `json:"outcome"`
	Duration time.Duration      `json:"duration_ns"`
	Changes  []reconcile.Change `json:"changes,omitempty"`
	Error    string             `json:"error,omitempty"`
}

// Outcome is what happened to a stage in a run.
type Outcome string

// Outcomes of a stage in a run.
const (
	OutcomeUnchanged   Outcome = "unchanged"
	OutcomeChanged     Outcome = "changed"
	OutcomePlanned     Outcome = "planned" // plan only: changes pending
	OutcomeFailed      Outcome = "failed"
	OutcomeInterrupted Outcome = "interrupted"
	OutcomeNotReady    Outcome = "waits for earlier stages"
	OutcomeDestroyed   Outcome = "destroyed"
)

// keepRuns bounds the run history.
const keepRuns = 50

// SaveRun writes a run record and prunes the oldest beyond keepRuns.
func SaveRun(dir string, r RunRecord) error {
	runs := filepath.Join(dir, "runs")
	if err := os.MkdirAll(runs, 0o700); err != nil {
		return fmt.Errorf("run history: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("run history: %w", err)
	}
	if err := fsutil.WriteFile(filepath.Join(runs, r.ID+".json"), append(b, '\n'), 0o600); err != nil {
		return err
	}
	entries, err := os.ReadDir(runs)
	if err != nil {
		return fmt.Errorf("run history: %w", err)
	}
	var names []string
	for _, e := range entries {
		if filepath.Ext(e.Name()) == ".json" {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names) // ids start with a sortable timestamp
	for len(names) > keepRuns {
		id := names[0][:len(names[0])-len(".json")]
		os.Remove(filepath.Join(runs, names[0]))
		os.Remove(filepath.Join(dir, "logs", id+".log"))
		names = names[1:]
	}
	return nil
}

// LoadRuns returns the run history, oldest first.
func LoadRuns(dir string) ([]RunRecord, error) {
	entries, err := os.ReadDir(filepath.Join(dir, "runs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []RunRecord
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "runs", e.Name()))
		if err != nil {
			return nil, err
		}
		var r RunRecord
		if json.Unmarshal(b, &r) == nil {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
