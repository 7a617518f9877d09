// Package nomadjob is how bootstrap changes a Nomad job and sees it
// through, for the jobs stage and for deploy alike: plan with a diff,
// register against the plan's index, wait until the job's current version
// runs healthy, and explain a failure with the tasks' events and the end of
// their logs.
package nomadjob

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/poll"
)

// Plan asks Nomad what registering job, in its namespace, would change.
// The error is the API's, for the caller to say what it planned.
func Plan(ctx context.Context, c *nomadapi.Client, job *nomadapi.Job) (*nomadapi.JobPlanResponse, error) {
	resp, _, err := c.Jobs().PlanOpts(job, &nomadapi.PlanOptions{Diff: true}, writeOpts(ctx, job))
	return resp, err
}

// ErrChanged means the job changed between its plan and its registration.
var ErrChanged = errors.New("the job changed since the plan (someone else registered it meanwhile)")

// Register registers job only if it is still what plan saw (the plan's
// JobModifyIndex): what was shown is what is registered. Otherwise the
// error wraps ErrChanged.
func Register(ctx context.Context, c *nomadapi.Client, job *nomadapi.Job, plan *nomadapi.JobPlanResponse) (*nomadapi.JobRegisterResponse, error) {
	resp, _, err := c.Jobs().RegisterOpts(job, &nomadapi.RegisterOptions{EnforceIndex: true, ModifyIndex: plan.JobModifyIndex}, writeOpts(ctx, job))
	if err != nil && strings.Contains(err.Error(), "Enforcing job modify index") {
		return nil, fmt.Errorf("%w: %w", ErrChanged, err)
	}
	return resp, err
}

func writeOpts(ctx context.Context, job *nomadapi.Job) *nomadapi.WriteOptions {
	ns := ""
	if job.Namespace != nil {
		ns = *job.Namespace
	}
	return (&nomadapi.WriteOptions{Namespace: ns}).WithContext(ctx)
}

// Running reports whether an allocation runs and no deployment found it
// unhealthy: what counts towards a job that runs.
func Running(a *nomadapi.AllocationListStub) bool {
	ds := a.DeploymentStatus
	return a.ClientStatus == "running" && (ds == nil || ds.Healthy == nil || *ds.Healthy)
}

// Unhealthy reports whether an allocation of a deployment failed, was
// found unhealthy, or never became healthy (still pending, or running with
// checks that do not pass: what a timeout leaves). These are the ones to
// explain when a deployment fails.
func Unhealthy(a *nomadapi.AllocationListStub) bool {
	switch a.ClientStatus {
	case "failed", "lost":
		return true
	case "complete":
		return false
	}
	ds := a.DeploymentStatus
	return ds == nil || ds.Healthy == nil || !*ds.Healthy
}

// Health is one look at a job's current version.
type Health struct {
	Healthy bool
	// Failed: a deployment or an allocation failed and too few run;
	// waiting alone will not help.
	Failed bool
	// DeploymentFailed: what failed is the current version's deployment.
	DeploymentFailed bool
	// Status says in one line how many allocations run, or what is
	// missing.
	Status string
	// Current are the allocations of the current version meant to run.
	Current []*nomadapi.AllocationListStub
	// unproven: some running allocation has no deployment's verdict (a
	// system job's always), so it may yet fail a moment after it started.
	unproven bool
}

// Check looks once at whether the job's current version runs healthy: no
// deployment of it is in progress, and as many of its allocations run (and
// are not marked unhealthy) as it wants — the count of its groups, or each
// group on every eligible client for a system job. A deployment that
// succeeded long ago proves nothing about allocations that died since.
func Check(ctx context.Context, c *nomadapi.Client, ns, id string) (Health, error) {
	q := (&nomadapi.QueryOptions{Namespace: ns}).WithContext(ctx)
	var h Health
	job, _, err := c.Jobs().Info(id, q)
	if err != nil {
		return h, fmt.Errorf("job %s: %w", id, err)
	}
	allocs, _, err := c.Jobs().Allocations(id, false, q)
	if err != nil {
		return h, fmt.Errorf("job %s: allocations: %w", id, err)
	}
	failedAlloc := false
	running, starting := 0, 0
	for _, a := range allocs {
		if a.JobVersion != *job.Version || a.DesiredStatus != "run" {
			continue
		}
		h.Current = append(h.Current, a)
		switch {
		case Running(a):
			running++
			if a.DeploymentStatus == nil || a.DeploymentStatus.Healthy == nil {
				h.unproven = true
			}
		case a.ClientStatus == "pending" || a.ClientStatus == "running":
			starting++
		case a.ClientStatus == "failed" && a.NextAllocation == "":
			// A failed allocation that Nomad replaced is history.
			failedAlloc = true
		}
	}
	// Failed means nothing more is on its way: no allocation still starts.
	failedAlloc = failedAlloc && starting == 0
	want := 0
	if *job.Type == "service" {
		for _, tg := range job.TaskGroups {
			want += *tg.Count
		}
		d, _, err := c.Jobs().LatestDeployment(id, q)
		if err != nil {
			return h, fmt.Errorf("job %s: deployment: %w", id, err)
		}
		if d != nil && d.JobVersion == *job.Version {
			switch d.Status {
			case "running", "pending", "initializing", "blocked", "paused":
				h.Status = "deployment " + d.Status + ": " + d.StatusDescription
				return h, nil
			case "failed", "cancelled":
				if running < want && starting == 0 {
					h.Failed, h.DeploymentFailed = true, true
					h.Status = "deployment " + d.Status + ": " + d.StatusDescription
					return h, nil
				}
			}
		}
	} else {
		// A system job runs each of its groups on every eligible client.
		clients, err := eligibleClients(ctx, c)
		if err != nil {
			return h, err
		}
		want = clients * len(job.TaskGroups)
	}
	h.Healthy = want > 0 && running >= want
	h.Status = fmt.Sprintf("%d of %d allocations running", running, want)
	if !h.Healthy && failedAlloc {
		h.Failed = true
		h.Status += ", an allocation failed"
	}
	return h, nil
}

func eligibleClients(ctx context.Context, c *nomadapi.Client) (int, error) {
	nodes, _, err := c.Nodes().List((&nomadapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("list nodes: %w", err)
	}
	n := 0
	for _, node := range nodes {
		if node.Status == "ready" && node.SchedulingEligibility == "eligible" {
			n++
		}
	}
	return n, nil
}

// WaitHealthy waits until the job's current version runs healthy (Check),
// and fails at once when a deployment or an allocation of it failed. Its
// error explains the allocations that do not run.
func WaitHealthy(ctx context.Context, c *nomadapi.Client, ns, id string, timeout time.Duration) error {
	var (
		last  Health
		seen  string // the healthy allocations and their versions
		since time.Time
	)
	err := poll.Until(ctx, timeout, time.Second, func() (bool, error) {
		h, err := Check(ctx, c, ns, id)
		if err != nil {
			return false, err
		}
		last = h
		if h.Failed {
			return false, fmt.Errorf("job %s: %s%s", id, h.Status, explain(ctx, c, ns, h.Current))
		}
		if !h.Healthy || !h.unproven {
			seen = ""
			return h.Healthy, nil
		}
		// No deployment vouches for these allocations: they count once
		// they have run unchanged for settleTime, as a deployment's
		// min_healthy_time would make them. A task that exits at once
		// shows "running" for a moment first.
		if s := allocVersions(h.Current); s != seen {
			seen, since = s, time.Now()
		}
		return time.Since(since) >= settleTime, nil
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("job %s is not healthy after %s (%s)%s", id, timeout, last.Status, explain(ctx, c, ns, last.Current))
	}
	return err
}

// settleTime is how long an allocation without a deployment's verdict has
// to run unchanged before WaitHealthy counts it.
const settleTime = 5 * time.Second

func allocVersions(allocs []*nomadapi.AllocationListStub) string {
	s := make([]string, len(allocs))
	for i, a := range allocs {
		s[i] = fmt.Sprintf("%s@%d", a.ID, a.ModifyIndex)
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}

// explain is Explain of the allocations that do not run, as indented lines
// to append to an error.
func explain(ctx context.Context, c *nomadapi.Client, ns string, allocs []*nomadapi.AllocationListStub) string {
	var bad []*nomadapi.AllocationListStub
	for _, a := range allocs {
		if !Running(a) {
			bad = append(bad, a)
		}
	}
	// The caller's context may be over: explaining gets one of its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var b strings.Builder
	for _, l := range Explain(ctx, c, ns, bad) {
		b.WriteString("\n  " + l)
	}
	return b.String()
}
