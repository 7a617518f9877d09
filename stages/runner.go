package stages

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
)

// Runner runs an ordered list of stages against one state directory. The
// caller holds the directory's lock.
type Runner struct {
	Stages []Stage
	Env    *Env
	// Approve is asked once before the first change of an `up`, with every
	// plan that could be made up front. Nil approves automatically.
	Approve func(plans []statedir.StageResult) (bool, error)
}

// StageError says which stage failed.
type StageError struct {
	Stage string
	Err   error
}

func (e *StageError) Error() string { return fmt.Sprintf("stage %s: %v", e.Stage, e.Err) }
func (e *StageError) Unwrap() error { return e.Err }

// ErrNotApproved is returned when the user declines the plan.
var ErrNotApproved = errors.New("plan not approved; nothing was changed")

// Plan asks every selected stage what it would change, without changing
// anything. A stage whose plan depends on an earlier stage's pending changes
// is reported as waiting.
func (r *Runner) Plan(ctx context.Context, sel Selection) ([]statedir.StageResult, error) {
	results, rest, pre := r.ahead(ctx, sel.Pick(r.Stages), "planning")
	blocked := false
	for _, st := range rest {
		if err := ctx.Err(); err != nil {
			return results, err
		}
		res, err := r.plan(ctx, st, blocked, pre)
		pre = nil
		results = append(results, res)
		if err != nil {
			return results, err
		}
		blocked = blocked || res.Outcome == statedir.OutcomePlanned || res.Outcome == statedir.OutcomeNotReady
	}
	return results, nil
}

// plan plans one stage. blocked says an earlier stage has changes pending:
// then a failing plan is reported as waiting for them, with its error, for
// what it cannot reach may be exactly what they start (a Vault that is down
// fails the pki stage's plan until the vault stage has started it).
//
// pre, when not nil, is the stage's plan already made by ahead.
func (r *Runner) plan(ctx context.Context, st Stage, blocked bool, pre *planned) (statedir.StageResult, error) {
	env := r.Env.ForStage(st.Name())
	res := statedir.StageResult{Name: st.Name()}
	start, changes, err := r.planStage(ctx, env, st, "planning", pre)
	res.Duration = time.Since(start)
	res.Changes = changes
	switch {
	case errors.Is(err, ErrNotReady), err != nil && blocked && ctx.Err() == nil:
		res.Outcome = statedir.OutcomeNotReady
		res.Error = env.redact(err.Error())
		err = nil
	case err != nil:
		res.Outcome = statedir.OutcomeFailed
		if ctx.Err() != nil {
			res.Outcome = statedir.OutcomeInterrupted
		}
		res.Error = env.redact(err.Error())
		err = &StageError{Stage: st.Name(), Err: err}
	case len(changes) > 0:
		res.Outcome = statedir.OutcomePlanned
	default:
		res.Outcome = statedir.OutcomeUnchanged
	}
	if len(changes) > 0 {
		env.Emit(Event{Type: EventPlan, Changes: changes})
	}
	env.Emit(Event{Type: EventStageEnd, Outcome: res.Outcome, Duration: res.Duration, Error: res.Error, Changes: changes})
	return res, err
}

// Up converges every selected stage in order: plan, and apply when the plan
// is not empty. Finished stages are re-planned, so drift is repaired and a
// killed run continues where it stopped.
func (r *Runner) Up(ctx context.Context, sel Selection) ([]statedir.StageResult, error) {
	results, picked, pre := r.ahead(ctx, sel.Pick(r.Stages), "")
	if len(picked) == 0 {
		return results, nil
	}
	if r.Approve != nil {
		ok, err := r.approve(ctx, picked)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, ErrNotApproved
		}
		// The answer may have taken a while: plan again.
		pre = nil
	}
	for _, st := range picked {
		res, err := r.up(ctx, st, pre)
		pre = nil
		results = append(results, res)
		if err != nil {
			return results, err
		}
	}
	return results, nil
}

// ahead plans every stage at once when the state says all of them are
// done: the usual second `up` or `plan`, where each stage only asks the live
// system and nothing changes. A stage's concurrent plan is what a serial run
// would have seen up to the first stage with changes (nothing before it
// changes anything), so the converged stages before that one are finished
// here, and the rest is returned for the caller to run one at a time,
// with the first one's plan (pre), so that a plan that is slow to fail
// (an agent down) is not waited for twice. Each stage's events are held
// back and reported in stage order.
func (r *Runner) ahead(ctx context.Context, picked []Stage, message string) (results []statedir.StageResult, rest []Stage, pre *planned) {
	for _, st := range picked {
		if r.Env.State.Stage(st.Name()).Status != statedir.StatusDone {
			return nil, picked, nil
		}
	}
	out := make([]*planned, len(picked))
	var wg sync.WaitGroup
	for i, st := range picked {
		wg.Go(func() { out[i] = r.quietPlan(ctx, st, message) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, picked, nil
	}
	for i, p := range out {
		if p.err != nil || len(p.changes) > 0 {
			return results, picked[i:], p
		}
		env := r.Env.ForStage(picked[i].Name())
		r.replay(p)
		res := statedir.StageResult{Name: picked[i].Name(), Outcome: statedir.OutcomeUnchanged, Duration: p.took}
		env.Emit(Event{Type: EventStageEnd, Outcome: res.Outcome, Duration: res.Duration})
		results = append(results, res)
	}
	return results, nil, nil
}

// planned is a stage's plan made by ahead, with the events it held back.
type planned struct {
	start   time.Time
	took    time.Duration
	changes []Change
	err     error
	events  []Event
}

// quietPlan plans one stage, holding its events back.
func (r *Runner) quietPlan(ctx context.Context, st Stage, message string) *planned {
	p := &planned{start: time.Now()}
	var mu sync.Mutex
	env := r.Env.ForStage(st.Name())
	env.reporter = ReporterFunc(func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		p.events = append(p.events, e)
	})
	env.Emit(Event{Type: EventStageStart, Message: message})
	p.changes, p.err = st.Plan(ctx, env)
	p.took = time.Since(p.start)
	return p
}

func (r *Runner) replay(p *planned) {
	if r.Env.reporter == nil {
		return
	}
	for _, e := range p.events {
		r.Env.reporter.Event(e)
	}
}

// planStage starts a stage and plans it, or reports the plan ahead made.
func (r *Runner) planStage(ctx context.Context, env *Env, st Stage, message string, pre *planned) (time.Time, []Change, error) {
	if pre != nil {
		r.replay(pre)
		return pre.start, pre.changes, pre.err
	}
	start := time.Now()
	env.Emit(Event{Type: EventStageStart, Message: message})
	changes, err := st.Plan(ctx, env)
	return start, changes, err
}

// approve plans as far as possible and asks once. It returns true at once
// when nothing would change.
func (r *Runner) approve(ctx context.Context, picked []Stage) (bool, error) {
	var plans []statedir.StageResult
	pending := false
	for _, st := range picked {
		res, err := r.plan(ctx, st, pending, nil)
		if err != nil {
			return false, err
		}
		plans = append(plans, res)
		if res.Outcome != statedir.OutcomeUnchanged {
			pending = true
		}
		if res.Outcome == statedir.OutcomeNotReady {
			break
		}
	}
	if !pending {
		return true, nil
	}
	return r.Approve(plans)
}

func (r *Runner) up(ctx context.Context, st Stage, pre *planned) (statedir.StageResult, error) {
	name := st.Name()
	env := r.Env.ForStage(name)
	state := r.Env.State
	start := time.Now()
	res := statedir.StageResult{Name: name}

	fail := func(status statedir.Status, err error) (statedir.StageResult, error) {
		res.Duration = time.Since(start)
		// The error is recorded in state.json and the run history, which
		// must never hold a secret.
		res.Error = env.redact(err.Error())
		res.Outcome = statedir.OutcomeFailed
		if status == statedir.StatusInterrupted {
			res.Outcome = statedir.OutcomeInterrupted
		}
		if e := state.SetStage(name, statedir.StageState{Status: status, Started: start, Finished: time.Now(), Error: res.Error, Changes: len(res.Changes)}); e != nil {
			err = errors.Join(err, e)
		}
		env.Emit(Event{Type: EventStageEnd, Outcome: res.Outcome, Duration: res.Duration, Error: res.Error})
		return res, &StageError{Stage: name, Err: err}
	}
	failure := func(err error) (statedir.StageResult, error) {
		if ctx.Err() != nil {
			return fail(statedir.StatusInterrupted, fmt.Errorf("interrupted: %w", err))
		}
		return fail(statedir.StatusFailed, err)
	}

	// A signal that lands between two stages must stop the run before the
	// next stage changes anything, even if its Plan never looks at ctx.
	if err := ctx.Err(); err != nil {
		env.Emit(Event{Type: EventStageStart})
		return failure(err)
	}
	start, changes, err := r.planStage(ctx, env, st, "", pre)
	if err != nil {
		return failure(err)
	}
	res.Changes = changes
	if len(changes) == 0 {
		res.Outcome = statedir.OutcomeUnchanged
		res.Duration = time.Since(start)
		// A converged stage is only recorded when its record says otherwise:
		// a second `up` writes nothing.
		if prev := state.Stage(name); prev.Status != statedir.StatusDone {
			if err := state.SetStage(name, statedir.StageState{Status: statedir.StatusDone, Started: start, Finished: time.Now()}); err != nil {
				return failure(err)
			}
		}
		env.Emit(Event{Type: EventStageEnd, Outcome: res.Outcome, Duration: res.Duration})
		return res, nil
	}

	env.Emit(Event{Type: EventPlan, Changes: changes})
	if err := state.SetStage(name, statedir.StageState{Status: statedir.StatusRunning, Started: start, Changes: len(changes)}); err != nil {
		return failure(err)
	}
	if err := st.Apply(ctx, env); err != nil {
		return failure(err)
	}
	// Apply must leave the stage converged; a plan that still has changes is
	// a bug worth failing on rather than reporting success.
	left, err := st.Plan(ctx, env)
	if err != nil {
		return failure(fmt.Errorf("re-plan after apply: %w", err))
	}
	if len(left) > 0 {
		return failure(fmt.Errorf("still %d change(s) after apply, first: %s", len(left), left[0]))
	}
	res.Outcome = statedir.OutcomeChanged
	res.Duration = time.Since(start)
	if err := state.SetStage(name, statedir.StageState{Status: statedir.StatusDone, Started: start, Finished: time.Now(), Changes: len(changes)}); err != nil {
		return failure(err)
	}
	env.Emit(Event{Type: EventStageEnd, Outcome: res.Outcome, Duration: res.Duration, Changes: changes})
	return res, nil
}

// Down destroys the selected stages in reverse order. Stages without a
// Destroy have nothing of their own to remove (their work lives on machines
// that an earlier stage tears down).
func (r *Runner) Down(ctx context.Context, sel Selection) ([]statedir.StageResult, error) {
	picked := sel.Pick(r.Stages)
	var results []statedir.StageResult
	for i := len(picked) - 1; i >= 0; i-- {
		st := picked[i]
		d, ok := st.(Destroyer)
		if !ok {
			continue
		}
		env := r.Env.ForStage(st.Name())
		start := time.Now()
		env.Emit(Event{Type: EventStageStart, Message: "destroying"})
		err := ctx.Err()
		if err == nil {
			err = d.Destroy(ctx, env)
		}
		res := statedir.StageResult{Name: st.Name(), Outcome: statedir.OutcomeDestroyed, Duration: time.Since(start)}
		if err != nil {
			res.Outcome = statedir.OutcomeFailed
			if ctx.Err() != nil {
				res.Outcome = statedir.OutcomeInterrupted
			}
			res.Error = env.redact(err.Error())
		}
		env.Emit(Event{Type: EventStageEnd, Outcome: res.Outcome, Duration: res.Duration, Error: res.Error})
		results = append(results, res)
		if err != nil {
			return results, &StageError{Stage: st.Name(), Err: err}
		}
		if err := r.Env.State.SetStage(st.Name(), statedir.StageState{Status: statedir.StatusPending}); err != nil {
			return results, err
		}
	}
	return results, nil
}
