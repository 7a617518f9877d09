package stages

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
)

// Stage statuses recorded in the state file.
const (
	StatusPending     = "pending"
	StatusRunning     = "running"
	StatusDone        = "done"
	StatusFailed      = "failed"
	StatusInterrupted = "interrupted"
)

// StageState is the recorded progress of one stage.
type StageState struct {
	Status   string    `json:"status"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	Error    string    `json:"error,omitempty"`
	Changes  int       `json:"changes"`
}

const stateVersion = 1

type stateFile struct {
	Version int                    `json:"version"`
	Stages  map[string]*StageState `json:"stages"`
	// Outputs are what stages hand to later stages and to `bootstrap env`:
	// addresses, file paths, accessors — never secret values (those live in
	// the secret store).
	Outputs map[string]string `json:"outputs"`
}

// State is the progress file of a state directory. Whether something exists
// is always asked of the live system; the state only records progress and
// outputs. Every change is written atomically at once.
type State struct {
	mu   sync.Mutex
	path string
	data stateFile
}

// StateFile is the state's file name inside the state directory.
const StateFile = "state.json"

// LoadState reads dir/state.json, or returns an empty state if there is none.
func LoadState(dir string) (*State, error) {
	s := &State{path: filepath.Join(dir, StateFile)}
	s.data = stateFile{Version: stateVersion, Stages: map[string]*StageState{}, Outputs: map[string]string{}}
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	if err := json.Unmarshal(b, &s.data); err != nil {
		return nil, fmt.Errorf("state file %s is corrupt (%v); move it away to start over", s.path, err)
	}
	if s.data.Version > stateVersion {
		return nil, fmt.Errorf("state file %s has version %d, newer than this bootstrap understands (%d); upgrade bootstrap", s.path, s.data.Version, stateVersion)
	}
	if s.data.Stages == nil {
		s.data.Stages = map[string]*StageState{}
	}
	if s.data.Outputs == nil {
		s.data.Outputs = map[string]string{}
	}
	return s, nil
}

func (s *State) saveLocked() error {
	b, err := json.MarshalIndent(s.data, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := fsutil.WriteFile(s.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// Stage returns the recorded progress of a stage (pending if never run).
func (s *State) Stage(name string) StageState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.data.Stages[name]; ok {
		return *st
	}
	return StageState{Status: StatusPending}
}

// SetStage records a stage's progress and saves the state.
func (s *State) SetStage(name string, st StageState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data.Stages[name] = &st
	return s.saveLocked()
}

// Output returns a recorded output, or "".
func (s *State) Output(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data.Outputs[key]
}

// Outputs returns a copy of every output.
func (s *State) Outputs() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.data.Outputs)
}

// SetOutput records an output and saves the state if it changed.
func (s *State) SetOutput(key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.data.Outputs[key]; ok && old == value {
		return nil
	}
	s.data.Outputs[key] = value
	return s.saveLocked()
}

// DeleteOutputs removes outputs (those of a destroyed stage) and saves.
func (s *State) DeleteOutputs(keys ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, k := range keys {
		if _, ok := s.data.Outputs[k]; ok {
			delete(s.data.Outputs, k)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return s.saveLocked()
}

// Reset forgets every stage's progress and output (after `down`).
func (s *State) Reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data.Stages = map[string]*StageState{}
	s.data.Outputs = map[string]string{}
	return s.saveLocked()
}

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
	Name     string        `json:"name"`
	Outcome  string        `json:"outcome"`
	Duration time.Duration `json:"duration_ns"`
	Changes  []Change      `json:"changes,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// Outcomes of a stage in a run.
const (
	OutcomeUnchanged   = "unchanged"
	OutcomeChanged     = "changed"
	OutcomePlanned     = "planned" // plan only: changes pending
	OutcomeFailed      = "failed"
	OutcomeInterrupted = "interrupted"
	OutcomeNotReady    = "waits for earlier stages"
	OutcomeDestroyed   = "destroyed"
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
