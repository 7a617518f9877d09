package stages_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// toy is a stage whose "live system" is a flag in memory: its plan is one
// change until an Apply succeeds. It counts its calls so tests can tell what
// the runner did.
type toy struct {
	name string

	mu        sync.Mutex
	converged bool
	plans     int
	applies   int
	// planErr is returned by Plan; applyErrs are returned by the first
	// len(applyErrs) Apply calls, one each.
	planErr   error
	applyErrs []error
	// known is returned by Plan with planErr: the changes a waiting stage
	// knows from the configuration.
	known []stages.Change
	// sticky makes Apply "succeed" without converging: a buggy stage.
	sticky bool
	// block makes Apply wait for the context to end.
	block   bool
	started chan struct{}
	// order, when set, records Destroy calls.
	order *[]string
	// after, when set, is a stage this one depends on: Plan is not ready
	// until after has converged.
	after *toy
	// meet, when set, is waited on by Plan: every toy sharing it must be
	// planning at the same time for any of them to go on.
	meet *sync.WaitGroup
}

func newToy(name string) *toy { return &toy{name: name} }

func (t *toy) Name() string { return t.name }

func (t *toy) Plan(ctx context.Context, e *stages.Env) ([]stages.Change, error) {
	if t.meet != nil {
		t.meet.Done()
		t.meet.Wait()
	}
	e.Logf("asked %s", t.name)
	if t.after != nil {
		t.after.mu.Lock()
		ready := t.after.converged
		t.after.mu.Unlock()
		if !ready {
			return nil, stages.NotReadyf("needs %s", t.after.name)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.plans++
	if t.planErr != nil {
		return t.known, t.planErr
	}
	if t.converged {
		return nil, nil
	}
	return []stages.Change{{Action: "create", Target: "thing " + t.name}}, nil
}

func (t *toy) Apply(ctx context.Context, _ *stages.Env) error {
	t.mu.Lock()
	t.applies++
	if len(t.applyErrs) > 0 {
		err := t.applyErrs[0]
		t.applyErrs = t.applyErrs[1:]
		t.mu.Unlock()
		return err
	}
	block, started := t.block, t.started
	t.mu.Unlock()
	if block {
		if started != nil {
			close(started)
		}
		<-ctx.Done()
		return ctx.Err()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.sticky {
		t.converged = true
	}
	return nil
}

func (t *toy) counts() (plans, applies int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.plans, t.applies
}

// destroyer is a toy that also undoes its work on `down`.
type destroyer struct {
	*toy
	destroyErr error
}

func (d *destroyer) Destroy(context.Context, *stages.Env) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.destroyErr != nil {
		return d.destroyErr
	}
	if d.order != nil {
		*d.order = append(*d.order, d.name)
	}
	d.converged = false
	return nil
}

// recorder keeps every event of a run.
type recorder struct {
	mu     sync.Mutex
	events []stages.Event
}

func (r *recorder) Event(e stages.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) all() []stages.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]stages.Event(nil), r.events...)
}

// newEnv opens a state directory the way a run does (without the lock) and
// returns an Env reporting to rec.
func newEnv(t testing.TB, dir string, rec *recorder) *stages.Env {
	t.Helper()
	store, err := secrets.Open(filepath.Join(dir, "secrets"), secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	state, err := statedir.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var rep stages.Reporter
	if rec != nil {
		rep = rec
	}
	return stages.NewEnv(nil, dir, store, state, nil, rep)
}

func stageList(ts ...*toy) []stages.Stage {
	out := make([]stages.Stage, len(ts))
	for i, t := range ts {
		out[i] = t
	}
	return out
}

func outcomes(res []statedir.StageResult) map[string]statedir.Outcome {
	m := map[string]statedir.Outcome{}
	for _, r := range res {
		m[r.Name] = r.Outcome
	}
	return m
}

func stageError(t *testing.T, err error, stage string) *stages.StageError {
	t.Helper()
	var se *stages.StageError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *StageError", err, err)
	}
	if se.Stage != stage {
		t.Fatalf("StageError names stage %q, want %q (%v)", se.Stage, stage, err)
	}
	return se
}
