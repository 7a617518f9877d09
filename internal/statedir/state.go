// Package statedir is the on-disk state of a platform: the progress file
// (state.json), the lock that lets one run at a time change it, and the run
// history (runs/, logs/).
package statedir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
)

// Status is the recorded progress of a stage.
type Status string

// Stage statuses recorded in the state file.
const (
	StatusPending     Status = "pending"
	StatusRunning     Status = "running"
	StatusDone        Status = "done"
	StatusFailed      Status = "failed"
	StatusInterrupted Status = "interrupted"
)

// StageState is the recorded progress of one stage.
type StageState struct {
	Status   Status    `json:"status"`
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
	// Notes are what a stage keeps for itself between runs (markers,
	// accessors, expiry times), by stage name. No other stage reads them.
	Notes map[string]map[string]string `json:"notes,omitempty"`
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

// Load reads dir/state.json, or returns an empty state if there is none.
func Load(dir string) (*State, error) {
	s := &State{path: filepath.Join(dir, StateFile)}
	s.data = stateFile{Version: stateVersion, Stages: map[string]*StageState{}, Outputs: map[string]string{}, Notes: map[string]map[string]string{}}
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
	if s.data.Notes == nil {
		s.data.Notes = map[string]map[string]string{}
	}
	s.moveLegacyNotes()
	return s, nil
}

// legacyNotes are the notes earlier versions kept among the outputs, by
// stage: an output whose key has one of the prefixes and suffixes becomes
// that stage's note of the same key, so an upgraded platform neither
// re-records them (a new AppRole secret ID, say) nor shows them as
// outputs.
var legacyNotes = []struct{ stage, prefix, suffix string }{
	{"consul", "consul_agent_token_", ""},
	{"consul", "consul_dns_token_", ""},
	{"pki", "vault_approle_", "_secret_id_accessor"},
	{"pki", "vault_approle_", "_secret_id_expires"},
	{"pki", "vault_root_token_revoked", ""},
	{"verify", "verified", ""},
	{"vault", "ansible_vault_digest", ""},
	{"consul", "ansible_consul_digest", ""},
	{"nomad", "ansible_nomad_digest", ""},
}

// moveLegacyNotes moves legacy notes in memory; the next save writes them.
func (s *State) moveLegacyNotes() {
	for k, v := range s.data.Outputs {
		for _, l := range legacyNotes {
			if strings.HasPrefix(k, l.prefix) && strings.HasSuffix(k, l.suffix) {
				if _, ok := s.data.Notes[l.stage][k]; !ok {
					s.note(l.stage)[k] = v
				}
				delete(s.data.Outputs, k)
				break
			}
		}
	}
}

// note returns stage's notes, creating the map.
func (s *State) note(stage string) map[string]string {
	m := s.data.Notes[stage]
	if m == nil {
		m = map[string]string{}
		s.data.Notes[stage] = m
	}
	return m
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

// Note returns a note stage keeps for itself, or "".
func (s *State) Note(stage, key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data.Notes[stage][key]
}

// SetNote records a note of stage and saves the state if it changed.
func (s *State) SetNote(stage, key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.data.Notes[stage][key]; ok && old == value {
		return nil
	}
	s.note(stage)[key] = value
	return s.saveLocked()
}

// DeleteNotes removes notes of stage and saves the state if any existed.
func (s *State) DeleteNotes(stage string, keys ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, k := range keys {
		if _, ok := s.data.Notes[stage][k]; ok {
			delete(s.data.Notes[stage], k)
			changed = true
		}
	}
	if len(s.data.Notes[stage]) == 0 {
		delete(s.data.Notes, stage)
	}
	if !changed {
		return nil
	}
	return s.saveLocked()
}

// Reset forgets every stage's progress, output and note (after `down`).
func (s *State) Reset() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data.Stages = map[string]*StageState{}
	s.data.Outputs = map[string]string{}
	s.data.Notes = map[string]map[string]string{}
	return s.saveLocked()
}
