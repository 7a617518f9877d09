package stages

import (
	"context"
	"errors"
	"fmt"
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
	var results []statedir.StageResult
	blocked := false
	for _, st := range sel.Pick(r.Stages) {
		if err := ctx.Err(); err != nil {
			return results, err
		}
		res, err := r.plan(ctx, st, blocked)
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
func (r *Runner) plan(ctx context.Context, st Stage, blocked bool) (statedir.StageResult, error) {
	env := r.Env.ForStage(st.Name())
	start := time.Now()
	res := statedir.StageResult{Name: st.Name()}
	env.Emit(Event{Type: EventStageStart, Message: "planning"})
	changes, err := st.Plan(ctx, env)
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
	picked := sel.Pick(r.Stages)
	if r.Approve != nil {
		ok, err := r.approve(ctx, picked)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, ErrNotApproved
		}
	}
	var results []statedir.StageResult
	for _, st := range picked {
		res, err := r.up(ctx, st)
		results = append(results, res)
		if err != nil {
			return results, err
		}
	}
	return results, nil
}

// approve plans as far as possible and asks once. It returns true at once
// when nothing would change.
func (r *Runner) approve(ctx context.Context, picked []Stage) (bool, error) {
	var plans []statedir.StageResult
	pending := false
	for _, st := range picked {
		res, err := r.plan(ctx, st, pending)
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

func (r *Runner) up(ctx context.Context, st Stage) (statedir.StageResult, error) {
	name := st.Name()
	env := r.Env.ForStage(name)
	state := r.Env.State
	start := time.Now()
	res := statedir.StageResult{Name: name}
	env.Emit(Event{Type: EventStageStart})

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
		return failure(err)
	}
	changes, err := st.Plan(ctx, env)
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
