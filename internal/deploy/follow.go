package deploy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/nomadjob"
)

// waitTime bounds each blocking query, so that progress is printed and the
// context is checked regularly.
const waitTime = 5 * time.Second

// follower follows what a registration (or a revert) set in motion.
type follower struct {
	d         *deployer
	jobID, ns string

	// progress and allocs remember what was printed, to print changes only.
	progress map[string]string
	allocs   map[string]string
	// timeout is how long what is followed may take; the caller's context
	// carries it, this is for messages and for the revert.
	timeout time.Duration
	// reverting is set while following a revert: its failure is reported,
	// never reverted again.
	reverting bool
}

// minRevertTimeout is the least a revert is given. A revert brings back a
// version that was healthy before, and leaving it half done is worse than
// a slow failure: a short --timeout (a CI job that wants to fail fast)
// must not cut it off while its allocations pass min_healthy_time.
const minRevertTimeout = time.Minute

func (f *follower) q(ctx context.Context) *nomadapi.QueryOptions {
	return (&nomadapi.QueryOptions{Namespace: f.ns}).WithContext(ctx)
}

func (f *follower) wo(ctx context.Context) *nomadapi.WriteOptions {
	return (&nomadapi.WriteOptions{Namespace: f.ns}).WithContext(ctx)
}

// follow waits for the registration's evaluation, finds the deployment it
// started, and follows it.
func (f *follower) follow(ctx context.Context, res Result, evalID string, specIndex uint64) (Result, error) {
	ev, evalErr := f.waitEval(ctx, evalID)
	// Find what the registration made even when the evaluation did not
	// finish in time: that is what a failure must report and revert.
	rctx := ctx
	if evalErr != nil {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
	}
	dep, err := f.findDeployment(rctx, specIndex)
	if err != nil {
		return res, errors.Join(evalErr, err)
	}
	version, err := f.versionAt(rctx, dep)
	if err != nil {
		return res, errors.Join(evalErr, err)
	}
	if evalErr != nil {
		return f.stopped(ctx, res, dep, version, evalErr)
	}
	if len(ev.FailedTGAllocs) > 0 {
		for tg, m := range ev.FailedTGAllocs {
			f.d.p.Printf("group %q could not be placed: %s", tg, placementFailure(m))
		}
		return f.stopped(ctx, res, dep, version, errors.New("the scheduler could not place every allocation"))
	}
	if dep == nil {
		return f.watchAllocs(ctx, res, version)
	}
	return f.watch(ctx, res, dep.ID, version)
}

// waitEval waits until the evaluation has been processed.
func (f *follower) waitEval(ctx context.Context, id string) (*nomadapi.Evaluation, error) {
	var index uint64
	for {
		q := f.q(ctx)
		q.WaitIndex, q.WaitTime = index, waitTime
		ev, qm, err := f.d.nc.Evaluations().Info(id, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("timed out waiting for evaluation %s", nomadjob.Short(id))
			}
			return nil, fmt.Errorf("read evaluation %s: %w", nomadjob.Short(id), err)
		}
		index = qm.LastIndex
		switch ev.Status {
		case "complete":
			return ev, nil
		case "failed", "canceled":
			return nil, fmt.Errorf("evaluation %s %s: %s", nomadjob.Short(id), ev.Status, ev.StatusDescription)
		}
	}
}

// findDeployment returns the deployment of the job version registered at
// specIndex, or nil when the job has none (batch jobs; jobs whose update
// strategy is off).
func (f *follower) findDeployment(ctx context.Context, specIndex uint64) (*nomadapi.Deployment, error) {
	deps, _, err := f.d.nc.Jobs().Deployments(f.jobID, false, f.q(ctx))
	if err != nil {
		return nil, f.d.apiError("read deployments", err)
	}
	for _, d := range deps {
		if d.JobSpecModifyIndex == specIndex {
			return d, nil
		}
	}
	return nil, nil
}

// versionAt returns the job version the deployment tracks, else the job's
// current version.
func (f *follower) versionAt(ctx context.Context, dep *nomadapi.Deployment) (uint64, error) {
	if dep != nil {
		return dep.JobVersion, nil
	}
	job, _, err := f.d.nc.Jobs().Info(f.jobID, f.q(ctx))
	if err != nil {
		return 0, f.d.apiError("read job", err)
	}
	return *job.Version, nil
}

// watch follows a deployment until it succeeds, fails or the context ends.
func (f *follower) watch(ctx context.Context, res Result, depID string, version uint64) (Result, error) {
	f.d.p.Printf("deployment %s of version %d: following (timeout %s)", nomadjob.Short(depID), version, f.timeout)
	var index uint64
	for {
		q := f.q(ctx)
		q.WaitIndex, q.WaitTime = index, waitTime
		dep, qm, err := f.d.nc.Deployments().Info(depID, q)
		if err != nil {
			if ctx.Err() != nil {
				return f.stopped(ctx, res, &nomadapi.Deployment{ID: depID, Status: nomadapi.DeploymentStatusRunning}, version, fmt.Errorf("not healthy after %s", f.timeout))
			}
			return res, f.d.apiError("read deployment", err)
		}
		index = qm.LastIndex
		f.printProgress(dep)
		f.printAllocs(ctx, depID)
		switch dep.Status {
		case nomadapi.DeploymentStatusSuccessful:
			res.Version = version
			f.d.p.Printf("deployment %s: healthy: %s", nomadjob.Short(depID), dep.StatusDescription)
			return res, nil
		case nomadapi.DeploymentStatusFailed, nomadapi.DeploymentStatusCancelled:
			return f.stopped(ctx, res, dep, version, fmt.Errorf("deployment %s %s: %s", nomadjob.Short(depID), dep.Status, dep.StatusDescription))
		}
		if groups := awaitingPromotion(dep); len(groups) > 0 {
			res.Version = version
			f.d.p.Printf("deployment %s: the canaries of %s are healthy and wait for a manual promotion (the job has no auto_promote): `nomad deployment promote -namespace=%s %s`", nomadjob.Short(depID), strings.Join(groups, ", "), f.ns, depID)
			return res, nil
		}
	}
}

// needsPromotion is Nomad's description of a deployment whose canaries
// wait for a manual promotion (structs.DeploymentStatusDescriptionRunningNeedsPromotion).
const needsPromotion = "requires manual promotion"

// awaitingPromotion returns the groups whose healthy canaries wait for a
// person to promote them.
func awaitingPromotion(dep *nomadapi.Deployment) []string {
	if !strings.Contains(dep.StatusDescription, needsPromotion) {
		return nil
	}
	var out []string
	for _, tg := range slices.Sorted(maps.Keys(dep.TaskGroups)) {
		s := dep.TaskGroups[tg]
		if s.DesiredCanaries > 0 && !s.Promoted && len(s.PlacedCanaries) >= s.DesiredCanaries && s.HealthyAllocs >= s.DesiredCanaries {
			out = append(out, fmt.Sprintf("%q", tg))
		}
	}
	return out
}

func (f *follower) printProgress(dep *nomadapi.Deployment) {
	if f.progress == nil {
		f.progress = map[string]string{}
	}
	for _, tg := range slices.Sorted(maps.Keys(dep.TaskGroups)) {
		s := dep.TaskGroups[tg]
		line := fmt.Sprintf("desired %d, placed %d, healthy %d, unhealthy %d", s.DesiredTotal, s.PlacedAllocs, s.HealthyAllocs, s.UnhealthyAllocs)
		if s.DesiredCanaries > 0 {
			line += fmt.Sprintf(", canaries %d/%d", len(s.PlacedCanaries), s.DesiredCanaries)
			if s.Promoted {
				line += " (promoted)"
			}
		}
		if f.progress[tg] != line {
			f.progress[tg] = line
			f.d.p.Printf("group %q: %s", tg, line)
		}
	}
}

// printAllocs prints every change of a deployment's allocations: placed,
// running, healthy, failed.
func (f *follower) printAllocs(ctx context.Context, depID string) {
	allocs, _, err := f.d.nc.Deployments().Allocations(depID, f.q(ctx))
	if err != nil {
		return // progress is best effort; the deployment's status decides
	}
	f.printAllocStubs(allocs)
}

func (f *follower) printAllocStubs(allocs []*nomadapi.AllocationListStub) {
	if f.allocs == nil {
		f.allocs = map[string]string{}
	}
	slices.SortFunc(allocs, func(a, b *nomadapi.AllocationListStub) int { return cmp.Compare(a.CreateIndex, b.CreateIndex) })
	for _, a := range allocs {
		st := a.ClientStatus
		if a.DesiredStatus != "run" {
			st += " (" + a.DesiredStatus + ")"
		}
		if ds := a.DeploymentStatus; ds != nil && ds.Healthy != nil {
			st += map[bool]string{true: ", healthy", false: ", unhealthy"}[*ds.Healthy]
		}
		if f.allocs[a.ID] == st {
			continue
		}
		f.allocs[a.ID] = st
		canary := ""
		if a.DeploymentStatus != nil && a.DeploymentStatus.Canary {
			canary = " canary"
		}
		f.d.p.Printf("allocation %s (group %q, version %d%s) on %s: %s", nomadjob.Short(a.ID), a.TaskGroup, a.JobVersion, canary, a.NodeName, st)
	}
}

// watchAllocs follows a registration without a deployment: its
// allocations must all run (or, for a batch job, complete).
func (f *follower) watchAllocs(ctx context.Context, res Result, version uint64) (Result, error) {
	f.d.p.Printf("version %d has no deployment (no update strategy, or a batch job): following its allocations (timeout %s)", version, f.timeout)
	var index uint64
	for {
		q := f.q(ctx)
		q.WaitIndex, q.WaitTime = index, waitTime
		all, qm, err := f.d.nc.Jobs().Allocations(f.jobID, false, q)
		if err != nil {
			if ctx.Err() != nil {
				return f.stopped(ctx, res, nil, version, fmt.Errorf("not running after %s", f.timeout))
			}
			return res, f.d.apiError("read allocations", err)
		}
		index = qm.LastIndex
		var mine []*nomadapi.AllocationListStub
		for _, a := range all {
			if a.JobVersion == version && a.DesiredStatus == "run" {
				mine = append(mine, a)
			}
		}
		f.printAllocStubs(mine)
		done, failed := len(mine) > 0, false
		for _, a := range mine {
			switch a.ClientStatus {
			case "failed", "lost":
				failed = true
			case "running":
				done = done && a.JobType != "batch" && a.JobType != "sysbatch"
			case "complete":
			default:
				done = false
			}
		}
		if failed {
			return f.stopped(ctx, res, nil, version, errors.New("an allocation failed"))
		}
		if done {
			res.Version = version
			f.d.p.Printf("version %d: every allocation is %s", version, mine[0].ClientStatus)
			return res, nil
		}
	}
}

// stopped handles a deployment that did not become healthy: show why,
// then revert to the last stable version unless told not to.
func (f *follower) stopped(ctx context.Context, res Result, dep *nomadapi.Deployment, version uint64, why error) (Result, error) {
	res.Version = version
	if f.d.interrupted() {
		what := "the evaluation"
		if dep != nil {
			what = "deployment " + nomadjob.Short(dep.ID)
		}
		f.d.p.Printf("interrupted: %s of version %d goes on in Nomad, untouched: `nomad job status -namespace=%s %s`", what, version, f.ns, f.jobID)
		return res, fmt.Errorf("interrupted while following version %d of job %q", version, f.jobID)
	}
	f.d.p.Printf("FAILED: %v", why)
	// The deployment's own context may be over (timeout): reporting and
	// reverting get a fresh one of the same length.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.timeout)
	defer cancel()
	f.report(ctx, dep, version)

	if f.reverting {
		return res, fmt.Errorf("%w, and so did the revert: %v", ErrFailed, why)
	}
	if f.d.opts.NoRevert {
		f.d.p.Printf("--no-revert: leaving job %q at version %d as it is", f.jobID, version)
		return res, fmt.Errorf("%w: %v (not reverted: --no-revert)", ErrFailed, why)
	}

	// Mark a deployment still in progress as failed, so that Nomad stops
	// placing it; a job with auto_revert is then rolled back by Nomad.
	if dep != nil && dep.Status == nomadapi.DeploymentStatusRunning {
		up, _, err := f.d.nc.Deployments().Fail(dep.ID, f.wo(ctx))
		switch {
		case err != nil:
			f.d.p.Printf("marking deployment %s failed: %v", nomadjob.Short(dep.ID), err)
		case up.RevertedJobVersion != nil:
			f.d.p.Printf("deployment %s marked failed; Nomad reverts to version %d (the job's auto_revert)", nomadjob.Short(dep.ID), *up.RevertedJobVersion)
		default:
			f.d.p.Printf("deployment %s marked failed", nomadjob.Short(dep.ID))
		}
	}

	job, _, err := f.d.nc.Jobs().Info(f.jobID, f.q(ctx))
	if err != nil {
		return res, errors.Join(fmt.Errorf("%w: %v", ErrFailed, why), f.d.apiError("read job", err))
	}
	if *job.Version != version {
		// Nomad's auto_revert already rolled back (atomically with failing
		// the deployment), or someone deployed meanwhile: either way this
		// run's version is gone, and reverting again would be wrong.
		res.Version = *job.Version
		res.Reverted = true
		f.d.p.Printf("job %q is already at version %d (rolled back by Nomad's auto_revert, or deployed by someone else): not reverting again", f.jobID, *job.Version)
		f.settle(ctx, res)
		return res, fmt.Errorf("%w: %v (rolled back by Nomad to version %d)", ErrFailed, why, *job.Version)
	}

	stable, err := f.lastStable(ctx, version)
	if err != nil {
		return res, errors.Join(fmt.Errorf("%w: %v", ErrFailed, why), err)
	}
	if stable == nil {
		f.d.p.Printf("no earlier stable version of job %q to revert to (its first deployment?): leaving version %d as it is", f.jobID, version)
		return res, fmt.Errorf("%w: %v (nothing to revert to)", ErrFailed, why)
	}
	f.d.p.Printf("reverting job %q to version %d, the last stable one", f.jobID, *stable)
	// Only if the job is still at the failed version: never undo
	// someone else's newer deploy.
	rev, _, err := f.d.nc.Jobs().Revert(f.jobID, *stable, &version, f.wo(ctx), "", "")
	if err != nil {
		return res, errors.Join(fmt.Errorf("%w: %v", ErrFailed, why), f.d.apiError("revert", err))
	}
	res.Reverted = true
	rf := &follower{d: f.d, jobID: f.jobID, ns: f.ns, timeout: max(f.timeout, minRevertTimeout), reverting: true}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), rf.timeout)
	defer rcancel()
	after, err := rf.follow(rctx, res, rev.EvalID, rev.JobModifyIndex)
	res.Version = after.Version
	if err != nil {
		return res, fmt.Errorf("%w: %v; reverted to version %d: %v", ErrFailed, why, *stable, err)
	}
	f.d.p.Printf("reverted: job %q runs version %d again (as version %d)", f.jobID, *stable, after.Version)
	return res, fmt.Errorf("%w: %v (reverted to version %d)", ErrFailed, why, *stable)
}

// settle follows the deployment of the job's current version, if one is
// in progress, so that a rollback by Nomad is seen through.
func (f *follower) settle(ctx context.Context, res Result) {
	dep, _, err := f.d.nc.Jobs().LatestDeployment(f.jobID, f.q(ctx))
	if err != nil || dep == nil || dep.JobVersion != res.Version || dep.Status != nomadapi.DeploymentStatusRunning {
		return
	}
	rf := &follower{d: f.d, jobID: f.jobID, ns: f.ns, timeout: max(f.timeout, minRevertTimeout), reverting: true}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rf.timeout)
	defer cancel()
	rf.watch(rctx, res, dep.ID, res.Version)
}

// lastStable returns the newest stable version older than version.
func (f *follower) lastStable(ctx context.Context, version uint64) (*uint64, error) {
	versions, _, _, err := f.d.nc.Jobs().Versions(f.jobID, false, f.q(ctx))
	if err != nil {
		return nil, f.d.apiError("read job versions", err)
	}
	var best *uint64
	for _, j := range versions {
		if j.Version == nil || j.Stable == nil || !*j.Stable || *j.Version >= version {
			continue
		}
		if best == nil || *j.Version > *best {
			v := *j.Version
			best = &v
		}
	}
	return best, nil
}

// report prints why the version's allocations failed: their task events,
// checks and the end of their logs.
func (f *follower) report(ctx context.Context, dep *nomadapi.Deployment, version uint64) {
	var stubs []*nomadapi.AllocationListStub
	var err error
	if dep != nil {
		stubs, _, err = f.d.nc.Deployments().Allocations(dep.ID, f.q(ctx))
	} else {
		stubs, _, err = f.d.nc.Jobs().Allocations(f.jobID, true, f.q(ctx))
	}
	if err != nil {
		f.d.p.Printf("reading the allocations: %v", err)
		return
	}
	var bad []*nomadapi.AllocationListStub
	for _, a := range stubs {
		if a.JobVersion == version && nomadjob.Unhealthy(a) {
			bad = append(bad, a)
		}
	}
	if len(bad) == 0 {
		f.d.p.Printf("every allocation of version %d that was placed is healthy: %s", version, f.missing(ctx, dep))
		return
	}
	for _, l := range nomadjob.Explain(ctx, f.d.nc, f.ns, bad) {
		f.d.p.Printf("%s", l)
	}
}

// missing says why a deployment whose placed allocations are all healthy
// did not finish: allocations not placed, or not yet healthy long enough.
func (f *follower) missing(ctx context.Context, dep *nomadapi.Deployment) string {
	if dep == nil {
		return "the scheduler could not place the others"
	}
	d, _, err := f.d.nc.Deployments().Info(dep.ID, f.q(ctx))
	if err != nil {
		return "the scheduler could not place the others"
	}
	var want []string
	for _, tg := range slices.Sorted(maps.Keys(d.TaskGroups)) {
		s := d.TaskGroups[tg]
		if s.PlacedAllocs < s.DesiredTotal {
			want = append(want, fmt.Sprintf("group %q placed %d of %d", tg, s.PlacedAllocs, s.DesiredTotal))
		}
	}
	if len(want) > 0 {
		return "the scheduler could not place the others (" + strings.Join(want, ", ") + ")"
	}
	return "they were not yet healthy for min_healthy_time, or Nomad had not yet marked the deployment; a longer --timeout lets it finish"
}
