package stages

import (
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
)

// EventType says what an Event reports.
type EventType string

// Event types.
const (
	EventRunStart   EventType = "run_start"
	EventStageStart EventType = "stage_start"
	EventPlan       EventType = "plan"
	EventStep       EventType = "step"
	EventLog        EventType = "log"
	EventWarning    EventType = "warning"
	EventStageEnd   EventType = "stage_end"
	EventRunEnd     EventType = "run_end"
)

// Event is one thing that happened in a run. Every output mode (live view,
// plain lines, JSON) and the log file are built from events.
type Event struct {
	Time     time.Time              `json:"time"`
	Type     EventType              `json:"type"`
	Run      string                 `json:"run,omitempty"`
	Command  string                 `json:"command,omitempty"`
	Stage    string                 `json:"stage,omitempty"`
	Message  string                 `json:"message,omitempty"`
	Changes  []Change               `json:"changes,omitempty"`
	Outcome  statedir.Outcome       `json:"outcome,omitempty"`
	Duration time.Duration          `json:"duration_ns,omitempty"`
	Error    string                 `json:"error,omitempty"`
	Stages   []statedir.StageResult `json:"stages,omitempty"` // run_end
	Stale    *statedir.LockHolder   `json:"stale_lock,omitempty"`
}

// Reporter receives the events of a run.
type Reporter interface {
	Event(Event)
}

// ReporterFunc adapts a function to Reporter.
type ReporterFunc func(Event)

// Event calls f.
func (f ReporterFunc) Event(e Event) { f(e) }

// Env is what a stage works with: the configuration, the state directory,
// the secret store and a way to report progress.
type Env struct {
	Config   *config.Platform
	StateDir string
	Secrets  *secrets.Store
	State    *statedir.State
	// Log receives the full output of subprocesses (Ansible, Terraform),
	// redacted; it ends up in the run's log file.
	Log io.Writer

	reporter Reporter
	stage    string
}

// NewEnv builds an Env. reporter may be nil.
func NewEnv(cfg *config.Platform, stateDir string, store *secrets.Store, state *statedir.State, log io.Writer, reporter Reporter) *Env {
	if log == nil {
		log = io.Discard
	}
	return &Env{Config: cfg, StateDir: stateDir, Secrets: store, State: state, Log: log, reporter: reporter}
}

// ForStage returns a copy of e whose events carry the stage's name.
func (e *Env) ForStage(name string) *Env {
	c := *e
	c.stage = name
	return &c
}

// Path joins elem onto the state directory.
func (e *Env) Path(elem ...string) string {
	return filepath.Join(append([]string{e.StateDir}, elem...)...)
}

// Emit sends an event, with every secret redacted.
func (e *Env) Emit(ev Event) {
	if e.reporter == nil {
		return
	}
	ev.Time = time.Now()
	if ev.Stage == "" {
		ev.Stage = e.stage
	}
	if r := e.Secrets; r != nil {
		red := r.Redactor()
		ev.Message = red.String(ev.Message)
		ev.Error = red.String(ev.Error)
		ev.Changes = redactChanges(red, ev.Changes)
		stagesCopy := make([]statedir.StageResult, len(ev.Stages))
		for i, st := range ev.Stages {
			st.Error = red.String(st.Error)
			st.Changes = redactChanges(red, st.Changes)
			stagesCopy[i] = st
		}
		ev.Stages = stagesCopy
	}
	e.reporter.Event(ev)
}

// redact removes every known secret from s.
func (e *Env) redact(s string) string {
	if e.Secrets == nil {
		return s
	}
	return e.Secrets.Redactor().String(s)
}

// Step reports visible progress ("unsealing vault on server-1").
func (e *Env) Step(format string, args ...any) {
	e.Emit(Event{Type: EventStep, Message: fmt.Sprintf(format, args...)})
}

// Logf records detail that goes to the log file and JSON output, not to the
// live view.
func (e *Env) Logf(format string, args ...any) {
	e.Emit(Event{Type: EventLog, Message: fmt.Sprintf(format, args...)})
}

// Warnf reports something the user should know but that does not fail the run.
func (e *Env) Warnf(format string, args ...any) {
	e.Emit(Event{Type: EventWarning, Message: fmt.Sprintf(format, args...)})
}

func redactChanges(red *secrets.Redactor, in []Change) []Change {
	if len(in) == 0 {
		return in
	}
	out := make([]Change, len(in))
	for i, c := range in {
		out[i] = Change{Action: c.Action, Target: red.String(c.Target), Detail: red.String(c.Detail)}
	}
	return out
}

// Plan returns a reconcile.Plan that applies when apply is set and shows
// each change it makes as a step.
func (e *Env) Plan(apply bool) *reconcile.Plan {
	return &reconcile.Plan{Apply: apply, Before: func(c Change) { e.Step("%s", c) }}
}

// Note returns a note the stage keeps for itself (see statedir.State.Note).
func (e *Env) Note(key string) string { return e.State.Note(e.stage, key) }

// SetNote records a note of the stage; it writes only when it changes.
func (e *Env) SetNote(key, value string) error { return e.State.SetNote(e.stage, key, value) }

// DeleteNotes removes notes of the stage.
func (e *Env) DeleteNotes(keys ...string) error { return e.State.DeleteNotes(e.stage, keys...) }
