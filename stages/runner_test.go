package stages_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

func TestUpResumesAtFailedStage(t *testing.T) {
	dir := t.TempDir()
	a, b, c, d := newToy("a"), newToy("b"), newToy("c"), newToy("d")
	c.applyErrs = []error{errors.New("disk full")}
	r := &stages.Runner{Stages: stageList(a, b, c, d), Env: newEnv(t, dir, nil)}

	res, err := r.Up(context.Background(), stages.Selection{})
	se := stageError(t, err, "c")
	if se.Err.Error() != "disk full" {
		t.Errorf("StageError wraps %q, want the stage's error", se.Err)
	}
	want := map[string]statedir.Outcome{"a": statedir.OutcomeChanged, "b": statedir.OutcomeChanged, "c": statedir.OutcomeFailed}
	if got := outcomes(res); !reflect.DeepEqual(got, want) {
		t.Errorf("first run outcomes = %v, want %v", got, want)
	}
	if _, n := d.counts(); n != 0 {
		t.Errorf("stage d applied %d times after c failed", n)
	}
	state, err := statedir.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, status := range map[string]statedir.Status{"a": statedir.StatusDone, "b": statedir.StatusDone, "c": statedir.StatusFailed, "d": statedir.StatusPending} {
		if got := state.Stage(name); got.Status != status {
			t.Errorf("state of %s after the failed run = %q, want %q", name, got.Status, status)
		}
	}
	if got := state.Stage("c").Error; got != "disk full" {
		t.Errorf("recorded error of c = %q", got)
	}

	// A new run (a new process: the state is read from disk again) against
	// the same live system.
	r = &stages.Runner{Stages: stageList(a, b, c, d), Env: newEnv(t, dir, nil)}
	res, err = r.Up(context.Background(), stages.Selection{})
	if err != nil {
		t.Fatalf("second run: %v", err)
	}
	want = map[string]statedir.Outcome{"a": statedir.OutcomeUnchanged, "b": statedir.OutcomeUnchanged, "c": statedir.OutcomeChanged, "d": statedir.OutcomeChanged}
	if got := outcomes(res); !reflect.DeepEqual(got, want) {
		t.Errorf("second run outcomes = %v, want %v", got, want)
	}
	for st, n := range map[*toy]int{a: 1, b: 1, c: 2, d: 1} {
		if _, got := st.counts(); got != n {
			t.Errorf("stage %s applied %d times in both runs, want %d", st.name, got, n)
		}
	}
	state, _ = statedir.Load(dir)
	for _, name := range []string{"a", "b", "c", "d"} {
		if got := state.Stage(name); got.Status != statedir.StatusDone || got.Error != "" {
			t.Errorf("state of %s after the second run = %+v, want done without error", name, got)
		}
	}
}

func TestUpFailsWhenApplyLeavesChanges(t *testing.T) {
	dir := t.TempDir()
	a, b := newToy("a"), newToy("b")
	a.sticky = true
	r := &stages.Runner{Stages: stageList(a, b), Env: newEnv(t, dir, nil)}
	res, err := r.Up(context.Background(), stages.Selection{})
	stageError(t, err, "a")
	if !strings.Contains(err.Error(), "still 1 change(s) after apply, first: create thing a") {
		t.Errorf("error = %q, want it to say what is left", err)
	}
	if got := outcomes(res); !reflect.DeepEqual(got, map[string]statedir.Outcome{"a": statedir.OutcomeFailed}) {
		t.Errorf("outcomes = %v", got)
	}
	if _, n := b.counts(); n != 0 {
		t.Error("the next stage ran after a stage that did not converge")
	}
	state, _ := statedir.Load(dir)
	if st := state.Stage("a"); st.Status != statedir.StatusFailed || st.Changes != 1 {
		t.Errorf("state of a = %+v, want failed with 1 change", st)
	}
}

func TestUpNotReady(t *testing.T) {
	t.Run("not ready", func(t *testing.T) {
		dir := t.TempDir()
		st := newToy("pki")
		st.planErr = stages.NotReadyf("vault is not initialised")
		r := &stages.Runner{Stages: stageList(st), Env: newEnv(t, dir, nil)}
		res, err := r.Up(context.Background(), stages.Selection{})
		stageError(t, err, "pki")
		if !errors.Is(err, stages.ErrNotReady) {
			t.Errorf("error %v does not wrap ErrNotReady", err)
		}
		if len(res) != 1 || res[0].Outcome != statedir.OutcomeFailed || !strings.Contains(res[0].Error, "vault is not initialised") {
			t.Errorf("results = %+v", res)
		}
		if _, n := st.counts(); n != 0 {
			t.Error("Apply ran although Plan said the stage is not ready")
		}
	})
}

// A waiting stage's known changes are shown by plan, and change nothing
// about up: it fails on the stage as before, without applying.
func TestNotReadyWithKnownChanges(t *testing.T) {
	known := func() []stages.Change {
		return []stages.Change{{Action: "install", Target: "vault on server-1"}, {Action: "init", Target: "vault", Detail: "3 shares"}}
	}
	newWaiting := func() *toy {
		st := newToy("vault")
		st.known, st.planErr = stages.WithKnown(nil, stages.NotReadyf("no inventory yet"), known)
		return st
	}
	st := newWaiting()
	if len(st.known) != 2 || st.known[0].Detail != stages.KnownDetail || st.known[1].Detail != "3 shares; "+stages.KnownDetail {
		t.Errorf("WithKnown marked %+v", st.known)
	}
	if got, err := stages.WithKnown(nil, errors.New("connection refused"), known); got != nil || err == nil {
		t.Errorf("WithKnown on an error other than ErrNotReady = %v, %v", got, err)
	}
	if got, _ := stages.WithKnown([]stages.Change{{Action: "start", Target: "x"}}, stages.NotReadyf("later"), known); len(got) != 1 || got[0].Target != "x" {
		t.Errorf("WithKnown replaced the changes found: %v", got)
	}

	r := &stages.Runner{Stages: stageList(st), Env: newEnv(t, t.TempDir(), nil)}
	res, err := r.Plan(context.Background(), stages.Selection{})
	if err != nil || len(res) != 1 || res[0].Outcome != statedir.OutcomeNotReady || len(res[0].Changes) != 2 {
		t.Errorf("plan = %+v, %v", res, err)
	}

	for _, approve := range []bool{false, true} {
		st := newWaiting()
		r := &stages.Runner{Stages: stageList(st), Env: newEnv(t, t.TempDir(), nil)}
		if approve {
			r.Approve = func([]statedir.StageResult) (bool, error) { return true, nil }
		}
		res, err := r.Up(context.Background(), stages.Selection{})
		stageError(t, err, "vault")
		if !errors.Is(err, stages.ErrNotReady) || len(res) != 1 || res[0].Outcome != statedir.OutcomeFailed {
			t.Errorf("up (approval %v) = %+v, %v", approve, res, err)
		}
		if _, n := st.counts(); n != 0 {
			t.Errorf("up (approval %v) applied a stage that is not ready", approve)
		}
	}
}

func TestPlanOutcomesAndNoWrites(t *testing.T) {
	dir := t.TempDir()
	done, pending, waiting, broken := newToy("done"), newToy("pending"), newToy("waiting"), newToy("broken")
	done.converged = true
	waiting.planErr = stages.NotReadyf("needs pending")
	broken.planErr = errors.New("cannot reach vault")
	all := []stages.Stage{done, pending, waiting, broken, newToy("never")}
	rec := &recorder{}
	r := &stages.Runner{Stages: all, Env: newEnv(t, dir, rec)}

	// After a stage with changes, a failing plan waits for them (what it
	// cannot reach may be what they start), and planning goes on.
	res, err := r.Plan(context.Background(), stages.Selection{})
	if err != nil {
		t.Fatalf("plan with a failure after pending changes: %v", err)
	}
	want := map[string]statedir.Outcome{
		"done":    statedir.OutcomeUnchanged,
		"pending": statedir.OutcomePlanned,
		"waiting": statedir.OutcomeNotReady,
		"broken":  statedir.OutcomeNotReady,
		"never":   statedir.OutcomePlanned,
	}
	if got := outcomes(res); !reflect.DeepEqual(got, want) {
		t.Errorf("plan outcomes = %v, want %v", got, want)
	}
	if e := res[3].Error; !strings.Contains(e, "cannot reach vault") {
		t.Errorf("the waiting stage's error is not shown: %q", e)
	}
	// With nothing pending before it, a failing plan is a failure.
	failed, err := (&stages.Runner{Stages: []stages.Stage{done, broken, newToy("never")}, Env: newEnv(t, t.TempDir(), nil)}).Plan(context.Background(), stages.Selection{})
	stageError(t, err, "broken")
	if got := outcomes(failed); !reflect.DeepEqual(got, map[string]statedir.Outcome{"done": statedir.OutcomeUnchanged, "broken": statedir.OutcomeFailed}) {
		t.Errorf("plan outcomes = %v, want done unchanged and broken failed", got)
	}
	if len(res[1].Changes) != 1 || res[1].Changes[0].Target != "thing pending" {
		t.Errorf("planned changes = %+v", res[1].Changes)
	}
	for _, st := range []*toy{done, pending, waiting, broken} {
		if _, n := st.counts(); n != 0 {
			t.Errorf("plan applied stage %s", st.name)
		}
	}
	if entries, _ := os.ReadDir(dir); slices.ContainsFunc(entries, func(e os.DirEntry) bool { return e.Name() == statedir.StateFile }) {
		t.Error("plan wrote the state file")
	}
	var planned bool
	for _, e := range rec.all() {
		if e.Type == stages.EventPlan && e.Stage == "pending" && len(e.Changes) == 1 {
			planned = true
		}
	}
	if !planned {
		t.Error("no plan event for the stage with changes")
	}
}

// A second `up` on a converged platform must not touch state.json: not its
// bytes, not its inode (every save replaces the file), not its mtime.
func TestSecondUpWritesNothing(t *testing.T) {
	dir := t.TempDir()
	a, b, c := newToy("a"), newToy("b"), newToy("c")
	r := &stages.Runner{Stages: stageList(a, b, c), Env: newEnv(t, dir, nil)}
	if _, err := r.Up(context.Background(), stages.Selection{}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, statedir.StateFile)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	bytesBefore, _ := os.ReadFile(path)

	r = &stages.Runner{Stages: stageList(a, b, c), Env: newEnv(t, dir, nil)}
	res, err := r.Up(context.Background(), stages.Selection{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res {
		if s.Outcome != statedir.OutcomeUnchanged {
			t.Errorf("stage %s: %s on the second run", s.Name, s.Outcome)
		}
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	bytesAfter, _ := os.ReadFile(path)
	if !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) || !bytes.Equal(bytesBefore, bytesAfter) {
		t.Errorf("the second up rewrote %s", path)
	}
	for _, st := range []*toy{a, b, c} {
		if _, n := st.counts(); n != 1 {
			t.Errorf("stage %s applied %d times, want 1", st.name, n)
		}
	}
}

// On a converged platform the stages are planned at once, and reported as
// if one after another.
func TestConvergedUpPlansAtOnce(t *testing.T) {
	dir := t.TempDir()
	a, b, c := newToy("a"), newToy("b"), newToy("c")
	r := &stages.Runner{Stages: stageList(a, b, c), Env: newEnv(t, dir, nil)}
	if _, err := r.Up(context.Background(), stages.Selection{}); err != nil {
		t.Fatal(err)
	}
	// Each plan waits until all three are planning: one at a time, the run
	// would never end.
	var meet sync.WaitGroup
	meet.Add(3)
	a.meet, b.meet, c.meet = &meet, &meet, &meet
	rec := &recorder{}
	r = &stages.Runner{Stages: stageList(a, b, c), Env: newEnv(t, dir, rec)}
	done := make(chan error)
	go func() {
		res, err := r.Up(context.Background(), stages.Selection{})
		if err == nil && !reflect.DeepEqual(outcomes(res), map[string]statedir.Outcome{"a": statedir.OutcomeUnchanged, "b": statedir.OutcomeUnchanged, "c": statedir.OutcomeUnchanged}) {
			err = fmt.Errorf("outcomes %v", outcomes(res))
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("the converged stages were not planned at once")
	}
	var got []string
	for _, e := range rec.all() {
		got = append(got, fmt.Sprintf("%s %s %s", e.Stage, e.Type, e.Message))
	}
	want := []string{
		"a stage_start ", "a log asked a", "a stage_end ",
		"b stage_start ", "b log asked b", "b stage_end ",
		"c stage_start ", "c log asked c", "c stage_end ",
	}
	if !slices.Equal(got, want) {
		t.Errorf("events\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Drift in one stage: the stages before it stand as planned at once; it is
// applied, and the stages after it are planned again against what it made.
func TestUpAfterDriftReplansTheRest(t *testing.T) {
	dir := t.TempDir()
	a, b, c := newToy("a"), newToy("b"), newToy("c")
	c.after = b
	r := &stages.Runner{Stages: stageList(a, b, c), Env: newEnv(t, dir, nil)}
	if _, err := r.Up(context.Background(), stages.Selection{}); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.converged = false
	b.mu.Unlock()
	aPlans, _ := a.counts()
	bPlans, _ := b.counts()
	cPlans, _ := c.counts()
	res, err := (&stages.Runner{Stages: stageList(a, b, c), Env: newEnv(t, dir, nil)}).Up(context.Background(), stages.Selection{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]statedir.Outcome{"a": statedir.OutcomeUnchanged, "b": statedir.OutcomeChanged, "c": statedir.OutcomeUnchanged}
	if got := outcomes(res); !reflect.DeepEqual(got, want) || res[0].Name != "a" || res[2].Name != "c" {
		t.Errorf("outcomes %v in order %v, want %v", got, res, want)
	}
	if n, _ := a.counts(); n != aPlans+1 {
		t.Errorf("a planned %d more times, want once", n-aPlans)
	}
	// b's plan made at once is the one applied; once more after Apply.
	if n, _ := b.counts(); n != bPlans+2 {
		t.Errorf("b planned %d more times, want twice (before and after its apply)", n-bPlans)
	}
	// Once at once (not ready: b had drifted), once after b was applied.
	if n, _ := c.counts(); n != cPlans+1 {
		t.Errorf("c reached its converged plan %d more times, want once, after b", n-cPlans)
	}
}

// A converged stage whose record is not "done" (e.g. it was finished by hand
// or its run was killed after Apply) is recorded once, then never again.
func TestConvergedStageRecordedOnce(t *testing.T) {
	dir := t.TempDir()
	a := newToy("a")
	a.converged = true
	r := &stages.Runner{Stages: stageList(a), Env: newEnv(t, dir, nil)}
	if _, err := r.Up(context.Background(), stages.Selection{}); err != nil {
		t.Fatal(err)
	}
	state, _ := statedir.Load(dir)
	if st := state.Stage("a"); st.Status != statedir.StatusDone || st.Changes != 0 {
		t.Errorf("state of a = %+v, want done", st)
	}
	fi1, _ := os.Stat(filepath.Join(dir, statedir.StateFile))
	r = &stages.Runner{Stages: stageList(a), Env: newEnv(t, dir, nil)}
	if _, err := r.Up(context.Background(), stages.Selection{}); err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(filepath.Join(dir, statedir.StateFile))
	if !os.SameFile(fi1, fi2) {
		t.Error("state.json rewritten for an unchanged stage already recorded as done")
	}
}

func TestUpInterrupted(t *testing.T) {
	dir := t.TempDir()
	a, slow, c := newToy("a"), newToy("slow"), newToy("c")
	slow.block = true
	slow.started = make(chan struct{})
	r := &stages.Runner{Stages: stageList(a, slow, c), Env: newEnv(t, dir, nil)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-slow.started
		cancel()
	}()
	res, err := r.Up(ctx, stages.Selection{})
	stageError(t, err, "slow")
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "interrupted") {
		t.Errorf("error = %v, want an interruption wrapping context.Canceled", err)
	}
	if got := outcomes(res); got["slow"] != statedir.OutcomeInterrupted || len(got) != 2 {
		t.Errorf("outcomes = %v", got)
	}
	state, _ := statedir.Load(dir)
	if st := state.Stage("slow"); st.Status != statedir.StatusInterrupted {
		t.Errorf("state of slow = %+v, want interrupted", st)
	}
	if _, n := c.counts(); n != 0 {
		t.Error("the stage after the interrupted one ran")
	}
}

// Cancelled between two stages: the next stage must not start changing
// things even when its Plan does not look at the context.
func TestUpCancelledBeforeStage(t *testing.T) {
	dir := t.TempDir()
	a := newToy("a")
	r := &stages.Runner{Stages: stageList(a), Env: newEnv(t, dir, nil)}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := r.Up(ctx, stages.Selection{})
	stageError(t, err, "a")
	if _, n := a.counts(); n != 0 {
		t.Error("a stage was applied after the run was cancelled")
	}
	state, _ := statedir.Load(dir)
	if st := state.Stage("a"); st.Status != statedir.StatusInterrupted {
		t.Errorf("state of a = %+v, want interrupted", st)
	}
}

func TestUpApproval(t *testing.T) {
	t.Run("declined", func(t *testing.T) {
		dir := t.TempDir()
		a, b := newToy("a"), newToy("b")
		b.planErr = stages.NotReadyf("needs a")
		var asked [][]statedir.StageResult
		r := &stages.Runner{Stages: stageList(a, b, newToy("c")), Env: newEnv(t, dir, nil),
			Approve: func(p []statedir.StageResult) (bool, error) { asked = append(asked, p); return false, nil }}
		_, err := r.Up(context.Background(), stages.Selection{})
		if !errors.Is(err, stages.ErrNotApproved) {
			t.Fatalf("error = %v, want ErrNotApproved", err)
		}
		// Planning stops at the first stage that cannot be planned yet.
		if len(asked) != 1 || len(asked[0]) != 2 || asked[0][0].Outcome != statedir.OutcomePlanned || asked[0][1].Outcome != statedir.OutcomeNotReady {
			t.Errorf("approval asked with %+v", asked)
		}
		if _, n := a.counts(); n != 0 {
			t.Error("a declined plan was applied")
		}
		if _, err := os.Stat(filepath.Join(dir, statedir.StateFile)); !os.IsNotExist(err) {
			t.Error("a declined run wrote the state file")
		}
	})
	t.Run("approved", func(t *testing.T) {
		a := newToy("a")
		calls := 0
		r := &stages.Runner{Stages: stageList(a), Env: newEnv(t, t.TempDir(), nil),
			Approve: func([]statedir.StageResult) (bool, error) { calls++; return true, nil }}
		if _, err := r.Up(context.Background(), stages.Selection{}); err != nil {
			t.Fatal(err)
		}
		if _, n := a.counts(); n != 1 || calls != 1 {
			t.Errorf("applies = %d, approvals = %d; want 1, 1", n, calls)
		}
		// Converged: nothing to approve, so nobody is asked.
		if _, err := r.Up(context.Background(), stages.Selection{}); err != nil {
			t.Fatal(err)
		}
		if calls != 1 {
			t.Errorf("asked to approve an empty plan")
		}
	})
}

func TestDownReverseOrder(t *testing.T) {
	dir := t.TempDir()
	var order []string
	mk := func(name string) *destroyer {
		d := &destroyer{toy: newToy(name)}
		d.order = &order
		return d
	}
	a, c, d := mk("a"), mk("c"), mk("d")
	b := newToy("b") // nothing of its own to destroy
	all := []stages.Stage{a, b, c, d}
	r := &stages.Runner{Stages: all, Env: newEnv(t, dir, nil)}
	if _, err := r.Up(context.Background(), stages.Selection{}); err != nil {
		t.Fatal(err)
	}

	res, err := r.Down(context.Background(), stages.Selection{Skip: []string{"c"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"d", "a"}; !slices.Equal(order, want) {
		t.Errorf("destroy order = %v, want %v", order, want)
	}
	if len(res) != 2 || res[0].Name != "d" || res[1].Name != "a" || res[0].Outcome != statedir.OutcomeDestroyed {
		t.Errorf("down results = %+v", res)
	}
	state, _ := statedir.Load(dir)
	for name, status := range map[string]statedir.Status{"a": statedir.StatusPending, "b": statedir.StatusDone, "c": statedir.StatusDone, "d": statedir.StatusPending} {
		if got := state.Stage(name).Status; got != status {
			t.Errorf("after down, %s is %q, want %q", name, got, status)
		}
	}

	// A failing Destroy stops the teardown there: earlier stages stay up.
	order = nil
	c.destroyErr = errors.New("node unreachable")
	_, err = r.Down(context.Background(), stages.Selection{})
	stageError(t, err, "c")
	if want := []string{"d"}; !slices.Equal(order, want) {
		t.Errorf("destroy order with c failing = %v, want %v", order, want)
	}
}

func TestSelection(t *testing.T) {
	all := stageList(newToy("keys"), newToy("provision"), newToy("vault"), newToy("pki"), newToy("consul"))
	names := func(ss []stages.Stage) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name())
		}
		return out
	}
	for _, tc := range []struct {
		sel  stages.Selection
		want []string
	}{
		{stages.Selection{}, []string{"keys", "provision", "vault", "pki", "consul"}},
		{stages.Selection{Only: []string{"pki", "keys"}}, []string{"keys", "pki"}},
		{stages.Selection{From: "vault"}, []string{"vault", "pki", "consul"}},
		{stages.Selection{From: "keys"}, []string{"keys", "provision", "vault", "pki", "consul"}},
		{stages.Selection{From: "consul"}, []string{"consul"}},
		{stages.Selection{Skip: []string{"provision", "pki"}}, []string{"keys", "vault", "consul"}},
		{stages.Selection{From: "provision", Skip: []string{"vault"}}, []string{"provision", "pki", "consul"}},
		{stages.Selection{Only: []string{"vault", "pki"}, Skip: []string{"pki"}}, []string{"vault"}},
		{stages.Selection{From: "vault", Skip: []string{"vault"}}, []string{"pki", "consul"}},
	} {
		if got := names(tc.sel.Pick(all)); !slices.Equal(got, tc.want) {
			t.Errorf("%+v picks %v, want %v", tc.sel, got, tc.want)
		}
		if err := tc.sel.Validate(all); err != nil {
			t.Errorf("%+v: Validate: %v", tc.sel, err)
		}
	}

	list := strings.Join(names(all), ", ")
	for _, tc := range []struct {
		sel  stages.Selection
		want string
	}{
		{stages.Selection{Only: []string{"vault", "nope"}}, `--only: unknown stage "nope"; stages are ` + list},
		{stages.Selection{Skip: []string{"Vault"}}, `--skip: unknown stage "Vault"; stages are ` + list},
		{stages.Selection{From: "start"}, `--from: unknown stage "start"; stages are ` + list},
		{stages.Selection{Only: []string{"vault"}, From: "keys"}, "--only and --from cannot be combined; use --only with the full list"},
	} {
		err := tc.sel.Validate(all)
		var ue *stages.UsageError
		if !errors.As(err, &ue) {
			t.Errorf("%+v: Validate = %v, want a *UsageError", tc.sel, err)
			continue
		}
		if err.Error() != tc.want {
			t.Errorf("%+v: Validate = %q, want %q", tc.sel, err, tc.want)
		}
	}
}

// A stage error that contains a secret must not carry it into state.json,
// the results or the events.
func TestStageErrorsRedacted(t *testing.T) {
	dir := t.TempDir()
	rec := &recorder{}
	env := newEnv(t, dir, rec)
	const secret = "s.TopSecretRootToken1234"
	if err := env.Secrets.Put("vault/root-token", secret); err != nil {
		t.Fatal(err)
	}
	a := newToy("a")
	a.applyErrs = []error{fmt.Errorf("login with %s failed", secret)}
	b := newToy("b")
	b.planErr = fmt.Errorf("token %s rejected", secret)
	r := &stages.Runner{Stages: stageList(a), Env: env}
	res, err := r.Up(context.Background(), stages.Selection{})
	if err == nil {
		t.Fatal("no error")
	}
	r.Stages = stageList(b)
	planRes, _ := r.Plan(context.Background(), stages.Selection{})
	res = append(res, planRes...)

	state, _ := os.ReadFile(filepath.Join(dir, statedir.StateFile))
	if bytes.Contains(state, []byte(secret)) {
		t.Errorf("state.json holds the secret:\n%s", state)
	}
	loaded, err := statedir.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := loaded.Stage("a").Error; got != "login with <redacted> failed" {
		t.Errorf("recorded error = %q, want the redacted error", got)
	}
	for _, r := range res {
		if strings.Contains(r.Error, secret) {
			t.Errorf("result of %s holds the secret: %q", r.Name, r.Error)
		}
	}
	for _, e := range rec.all() {
		if strings.Contains(fmt.Sprintf("%+v", e), secret) {
			t.Errorf("event holds the secret: %+v", e)
		}
	}
}
