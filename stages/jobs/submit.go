package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	platformjobs "github.com/platform-bootstrap/bootstrap/jobs"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// healthTimeout bounds the wait for one job to become healthy.
const healthTimeout = 5 * time.Minute

func general() *nomadapi.WriteOptions {
	return &nomadapi.WriteOptions{Namespace: platformjobs.Namespace}
}

// parse turns a job file and its variables into a job, through the
// servers' own parser.
func parse(ctx context.Context, p *platform, sp spec) (*nomadapi.Job, error) {
	src, err := platformjobs.File(sp.name)
	if err != nil {
		return nil, err
	}
	vars, err := sp.vars.Encode()
	if err != nil {
		return nil, err
	}
	job, err := p.nomad.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{JobHCL: src, Variables: vars, Canonicalize: true})
	if err != nil {
		return nil, fmt.Errorf("job %s: parse: %w", sp.name, err)
	}
	ns := platformjobs.Namespace
	job.Namespace = &ns
	return job, nil
}

// plan asks Nomad what registering job would change.
func plan(ctx context.Context, p *platform, job *nomadapi.Job) (*nomadapi.JobPlanResponse, error) {
	resp, _, err := p.nomad.Jobs().PlanOpts(job, &nomadapi.PlanOptions{Diff: true}, general().WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("job %s: plan: %w", *job.ID, err)
	}
	return resp, nil
}

func changed(resp *nomadapi.JobPlanResponse) bool {
	return resp.Diff != nil && resp.Diff.Type != "None"
}

// describe summarises a plan diff: which groups and tasks change.
func describe(d *nomadapi.JobDiff) string {
	if d == nil {
		return ""
	}
	if d.Type == "Added" {
		return "new job"
	}
	var parts []string
	for _, f := range d.Fields {
		if f.Type != "None" {
			parts = append(parts, f.Name)
		}
	}
	for _, g := range d.TaskGroups {
		if g.Type == "None" {
			continue
		}
		var tasks []string
		for _, t := range g.Tasks {
			if t.Type != "None" {
				tasks = append(tasks, t.Name)
			}
		}
		s := "group " + g.Name
		if len(tasks) > 0 {
			s += " (" + strings.Join(tasks, ", ") + ")"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return strings.ToLower(d.Type)
	}
	return strings.Join(parts, "; ")
}

func planJob(ctx context.Context, p *platform, sp spec) (*stages.Change, error) {
	job, err := parse(ctx, p, sp)
	if err != nil {
		return nil, err
	}
	resp, err := plan(ctx, p, job)
	if err != nil {
		return nil, err
	}
	target := "job " + platformjobs.Namespace + "/" + sp.name
	if changed(resp) {
		action := reconcile.Update
		if resp.Diff.Type == "Added" {
			action = reconcile.Create
		}
		return &stages.Change{Action: action, Target: target, Detail: describe(resp.Diff)}, nil
	}
	// The job is what the configuration says; whether it runs is another
	// question, asked of its allocations: a run killed while it waited for
	// the job, or a reboot of the nodes, leaves a job that is registered but
	// not (yet) healthy.
	h, err := checkHealth(ctx, p, sp.name)
	if err != nil {
		return nil, err
	}
	switch {
	case h.failed:
		return &stages.Change{Action: "restart", Target: target, Detail: h.status}, nil
	case !h.healthy:
		return &stages.Change{Action: "wait", Target: target, Detail: h.status}, nil
	}
	return nil, nil
}

// applyJob registers a job when its plan differs, with the plan's index as
// the check index, restarts it when it is unchanged but failed, and waits
// for it to be healthy.
func applyJob(ctx context.Context, e *stages.Env, p *platform, sp spec) error {
	job, err := parse(ctx, p, sp)
	if err != nil {
		return err
	}
	resp, err := plan(ctx, p, job)
	if err != nil {
		return err
	}
	if changed(resp) {
		e.Step("registering job %s (%s)", sp.name, describe(resp.Diff))
		_, _, err := p.nomad.Jobs().RegisterOpts(job, &nomadapi.RegisterOptions{EnforceIndex: true, ModifyIndex: resp.JobModifyIndex}, general().WithContext(ctx))
		if err != nil {
			return fmt.Errorf("job %s: register: %w", sp.name, err)
		}
		crashpoint.Hit("jobs:after-register")
	} else if h, err := checkHealth(ctx, p, sp.name); err != nil {
		return err
	} else if h.failed {
		e.Step("restarting the failed job %s (%s)", sp.name, h.status)
		if err := restart(ctx, p, job, h); err != nil {
			return err
		}
	}
	e.Step("waiting for job %s to be healthy", sp.name)
	return waitHealthy(ctx, p, sp.name)
}

// restart brings a failed job back. Nomad never replaces a system job's
// failed allocation, and places nothing more for a version whose deployment
// failed; nothing of the job runs either way.
func restart(ctx context.Context, p *platform, job *nomadapi.Job, h health) error {
	if h.deploymentFailed {
		// Only a new version deploys again: stop the job and register it
		// anew (nomad job stop, then nomad job run).
		if _, _, err := p.nomad.Jobs().Deregister(*job.ID, false, general().WithContext(ctx)); err != nil {
			return fmt.Errorf("job %s: stop: %w", *job.ID, err)
		}
		if _, _, err := p.nomad.Jobs().Register(job, general().WithContext(ctx)); err != nil {
			return fmt.Errorf("job %s: register: %w", *job.ID, err)
		}
	}
	// A failed allocation waiting for a delayed reschedule still holds its
	// place; a forced reschedule replaces it now.
	return reschedule(ctx, p, *job.ID)
}

// reschedule forces an evaluation that replaces the job's failed
// allocations (nomad job eval -force-reschedule) and waits until the
// scheduler has placed them.
func reschedule(ctx context.Context, p *platform, id string) error {
	evalID, _, err := p.nomad.Jobs().EvaluateWithOpts(id, nomadapi.EvalOptions{ForceReschedule: true}, general().WithContext(ctx))
	if err != nil {
		return fmt.Errorf("job %s: force reschedule: %w", id, err)
	}
	q := (&nomadapi.QueryOptions{Namespace: platformjobs.Namespace}).WithContext(ctx)
	return wait(ctx, time.Minute, func() (bool, error) {
		ev, _, err := p.nomad.Evaluations().Info(evalID, q)
		if err != nil {
			return false, fmt.Errorf("job %s: evaluation %s: %w", id, evalID, err)
		}
		switch ev.Status {
		case "complete":
			return true, nil
		case "failed", "canceled":
			return false, fmt.Errorf("job %s: evaluation %s %s: %s", id, evalID, ev.Status, ev.StatusDescription)
		}
		return false, nil
	})
}

// health is one look at a job's current version.
type health struct {
	healthy bool
	// failed: a deployment or an allocation failed and too few run;
	// waiting alone will not help.
	failed bool
	// deploymentFailed: what failed is the current version's deployment.
	deploymentFailed bool
	// status says in one line how many allocations run, or what is
	// missing.
	status string
	// current are the allocations of the current version meant to run.
	current []*nomadapi.AllocationListStub
}

// checkHealth looks once at whether the job's current version runs
// healthy: no deployment of it is in progress, and as many of its
// allocations run (and are not marked unhealthy) as it wants — the count of
// its groups, or each group on every eligible client for a system job. A deployment
// that succeeded long ago proves nothing about allocations that died since.
func checkHealth(ctx context.Context, p *platform, id string) (health, error) {
	q := (&nomadapi.QueryOptions{Namespace: platformjobs.Namespace}).WithContext(ctx)
	var h health
	job, _, err := p.nomad.Jobs().Info(id, q)
	if err != nil {
		return h, fmt.Errorf("job %s: %w", id, err)
	}
	allocs, _, err := p.nomad.Jobs().Allocations(id, false, q)
	if err != nil {
		return h, fmt.Errorf("job %s: allocations: %w", id, err)
	}
	failedAlloc := false
	running, starting := 0, 0
	for _, a := range allocs {
		if a.JobVersion != *job.Version || a.DesiredStatus != "run" {
			continue
		}
		h.current = append(h.current, a)
		switch {
		case runsHealthy(a):
			running++
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
		d, _, err := p.nomad.Jobs().LatestDeployment(id, q)
		if err != nil {
			return h, fmt.Errorf("job %s: deployment: %w", id, err)
		}
		if d != nil && d.JobVersion == *job.Version {
			switch d.Status {
			case "running", "pending", "initializing", "blocked", "paused":
				h.status = "deployment " + d.Status + ": " + d.StatusDescription
				return h, nil
			case "failed", "cancelled":
				if running < want && starting == 0 {
					h.failed, h.deploymentFailed = true, true
					h.status = "deployment " + d.Status + ": " + d.StatusDescription
					return h, nil
				}
			}
		}
	} else {
		// A system job runs each of its groups on every eligible client.
		clients, err := eligibleClients(ctx, p)
		if err != nil {
			return h, err
		}
		want = clients * len(job.TaskGroups)
	}
	h.healthy = want > 0 && running >= want
	h.status = fmt.Sprintf("%d of %d allocations running", running, want)
	if !h.healthy && failedAlloc {
		h.failed = true
		h.status += ", an allocation failed"
	}
	return h, nil
}

func runsHealthy(a *nomadapi.AllocationListStub) bool {
	return a.ClientStatus == "running" && (a.DeploymentStatus == nil || a.DeploymentStatus.Healthy == nil || *a.DeploymentStatus.Healthy)
}

// waitHealthy waits until the job's current version runs healthy, and
// fails at once when a deployment or an allocation of it failed.
func waitHealthy(ctx context.Context, p *platform, id string) error {
	var last health
	err := wait(ctx, healthTimeout, func() (bool, error) {
		h, err := checkHealth(ctx, p, id)
		if err != nil {
			return false, err
		}
		last = h
		if h.failed {
			return false, fmt.Errorf("job %s: %s%s", id, h.status, problems(ctx, p, h.current))
		}
		return h.healthy, nil
	})
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("job %s is not healthy after %s (%s)%s", id, healthTimeout, last.status, problems(context.Background(), p, last.current))
	}
	return err
}

func eligibleClients(ctx context.Context, p *platform) (int, error) {
	nodes, _, err := p.nomad.Nodes().List((&nomadapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, node := range nodes {
		if node.Status == "ready" && node.SchedulingEligibility == "eligible" {
			n++
		}
	}
	return n, nil
}

// problems describes what went wrong in allocations: the last task events
// and the last lines of the failing task's stderr.
func problems(ctx context.Context, p *platform, allocs []*nomadapi.AllocationListStub) string {
	var b strings.Builder
	for _, a := range allocs {
		if runsHealthy(a) {
			continue
		}
		names := make([]string, 0, len(a.TaskStates))
		for n := range a.TaskStates {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			ts := a.TaskStates[name]
			fmt.Fprintf(&b, "\n  allocation %s task %s (%s):", a.ID[:8], name, ts.State)
			events := ts.Events
			if len(events) > 4 {
				events = events[len(events)-4:]
			}
			for _, ev := range events {
				msg := ev.DisplayMessage
				if msg == "" {
					msg = ev.Message
				}
				fmt.Fprintf(&b, "\n    %s: %s", ev.Type, msg)
			}
			if tail := logTail(ctx, p, a.ID, name); tail != "" {
				fmt.Fprintf(&b, "\n    last stderr lines:\n%s", tail)
			}
		}
	}
	return b.String()
}

func logTail(ctx context.Context, p *platform, allocID, task string) string {
	q := (&nomadapi.QueryOptions{Namespace: platformjobs.Namespace}).WithContext(ctx)
	alloc, _, err := p.nomad.Allocations().Info(allocID, q)
	if err != nil {
		return ""
	}
	path := "alloc/logs/" + task + ".stderr.0"
	st, _, err := p.nomad.AllocFS().Stat(alloc, path, q)
	if err != nil {
		return ""
	}
	// Only the end of the log matters: read its last 64 KiB.
	const window = 64 << 10
	r, err := p.nomad.AllocFS().ReadAt(alloc, path, max(st.Size-window, 0), window, q)
	if err != nil {
		return ""
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	for i := range lines {
		lines[i] = "      " + lines[i]
	}
	return strings.Join(lines, "\n")
}

// staleJobs are platform jobs that run but the configuration disables.
func staleJobs(ctx context.Context, p *platform, specs []spec) ([]string, error) {
	list, _, err := p.nomad.Jobs().List((&nomadapi.QueryOptions{Namespace: platformjobs.Namespace}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	var out []string
	for _, j := range list {
		if j.Status == "dead" || !slices.Contains(platformjobs.Names(), j.ID) {
			continue
		}
		if !slices.ContainsFunc(specs, func(s spec) bool { return s.name == j.ID }) {
			out = append(out, j.ID)
		}
	}
	return out, nil
}

func stopJob(ctx context.Context, p *platform, id string) error {
	return stopJobIn(ctx, p, platformjobs.Namespace, id)
}

// stopJobIn stops a job, waits until its allocations stopped, and purges
// it. (Purging at once would hide allocations that still run.)
func stopJobIn(ctx context.Context, p *platform, ns, id string) error {
	w := (&nomadapi.WriteOptions{Namespace: ns}).WithContext(ctx)
	if _, _, err := p.nomad.Jobs().Deregister(id, false, w); err != nil {
		return fmt.Errorf("stop job %s/%s: %w", ns, id, err)
	}
	q := (&nomadapi.QueryOptions{Namespace: ns}).WithContext(ctx)
	err := wait(ctx, 2*time.Minute, func() (bool, error) {
		allocs, _, err := p.nomad.Jobs().Allocations(id, true, q)
		if err != nil {
			return false, fmt.Errorf("job %s/%s: allocations: %w", ns, id, err)
		}
		for _, a := range allocs {
			if a.ClientStatus == "running" || a.ClientStatus == "pending" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("stop job %s/%s: %w", ns, id, err)
	}
	if _, _, err := p.nomad.Jobs().Deregister(id, true, w); err != nil {
		return fmt.Errorf("purge job %s/%s: %w", ns, id, err)
	}
	return nil
}

// prometheusRole is the Vault JWT role the prometheus job logs in with: the
// per-job secrets of nomad-workloads plus reading Vault's own metrics.
const (
	prometheusRole   = "prometheus"
	prometheusPolicy = "prometheus-metrics"
	prometheusRules  = "path \"sys/metrics\" {\n  capabilities = [\"read\"]\n}\n"
	jwtRolePath      = "auth/jwt-nomad/role/" + prometheusRole
)

func prometheusRoleData() map[string]any {
	return map[string]any{
		"role_type":               "jwt",
		"bound_audiences":         []string{"vault.io"},
		"bound_claims":            map[string]any{"nomad_namespace": platformjobs.Namespace, "nomad_job_id": platformjobs.Prometheus},
		"user_claim":              "/nomad_job_id",
		"user_claim_json_pointer": true,
		"claim_mappings": map[string]any{
			"nomad_namespace": "nomad_namespace",
			"nomad_job_id":    "nomad_job_id",
			"nomad_task":      "nomad_task",
		},
		"token_type":     "service",
		"token_policies": []string{pki.PolicyNomadWorkloads, prometheusPolicy},
		"token_period":   1800,
	}
}

// roleDiffers compares the fields bootstrap sets with Vault's.
func roleDiffers(have map[string]any, want map[string]any) bool {
	if have == nil {
		return true
	}
	for k, w := range want {
		if norm(have[k]) != norm(w) {
			return true
		}
	}
	return false
}

// norm renders a value the way Vault returns it, for comparison.
func norm(v any) string {
	switch t := v.(type) {
	case []string:
		s := slices.Clone(t)
		sort.Strings(s)
		return strings.Join(s, ",")
	case []any:
		s := make([]string, len(t))
		for i, x := range t {
			s[i] = fmt.Sprint(x)
		}
		sort.Strings(s)
		return strings.Join(s, ",")
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%s;", k, norm(t[k]))
		}
		return b.String()
	}
	return fmt.Sprint(v)
}

func kvDiffers(ctx context.Context, p *platform, path string, want map[string]string) (bool, error) {
	s, err := p.vault.Logical().ReadWithContext(ctx, "secret/data/"+path)
	if err != nil {
		return false, fmt.Errorf("vault: read secret/%s: %w", path, err)
	}
	if s == nil || s.Data == nil {
		return true, nil
	}
	have, _ := s.Data["data"].(map[string]any)
	if len(have) != len(want) {
		return true, nil
	}
	for k, v := range want {
		if fmt.Sprint(have[k]) != v {
			return true, nil
		}
	}
	return false, nil
}

func planVault(ctx context.Context, p *platform) ([]stages.Change, error) {
	var out []stages.Change
	paths := make([]string, 0, len(p.kv))
	for k := range p.kv {
		paths = append(paths, k)
	}
	sort.Strings(paths)
	for _, path := range paths {
		d, err := kvDiffers(ctx, p, path, p.kv[path])
		if err != nil {
			return nil, err
		}
		if d {
			out = append(out, stages.Change{Action: "update", Target: "vault kv secret/" + path, Detail: "a platform job's secret"})
		}
	}
	pol, err := p.vault.Sys().GetPolicyWithContext(ctx, prometheusPolicy)
	if err != nil {
		return nil, fmt.Errorf("vault: read policy %s: %w", prometheusPolicy, err)
	}
	if strings.TrimSpace(pol) != strings.TrimSpace(prometheusRules) {
		out = append(out, stages.Change{Action: "update", Target: "vault policy " + prometheusPolicy})
	}
	role, err := p.vault.Logical().ReadWithContext(ctx, jwtRolePath)
	if err != nil {
		return nil, fmt.Errorf("vault: read %s: %w", jwtRolePath, err)
	}
	var have map[string]any
	if role != nil {
		have = role.Data
	}
	if roleDiffers(have, prometheusRoleData()) {
		out = append(out, stages.Change{Action: "update", Target: "vault " + jwtRolePath, Detail: "Prometheus reads Vault's metrics"})
	}
	return out, nil
}

func applyVault(ctx context.Context, e *stages.Env, p *platform) error {
	for path, fields := range p.kv {
		d, err := kvDiffers(ctx, p, path, fields)
		if err != nil {
			return err
		}
		if !d {
			continue
		}
		data := map[string]any{}
		for k, v := range fields {
			data[k] = v
		}
		e.Step("writing vault secret/%s", path)
		if _, err := p.vault.Logical().WriteWithContext(ctx, "secret/data/"+path, map[string]any{"data": data}); err != nil {
			return fmt.Errorf("vault: write secret/%s: %w", path, err)
		}
	}
	pol, err := p.vault.Sys().GetPolicyWithContext(ctx, prometheusPolicy)
	if err != nil {
		return err
	}
	if strings.TrimSpace(pol) != strings.TrimSpace(prometheusRules) {
		if err := p.vault.Sys().PutPolicyWithContext(ctx, prometheusPolicy, prometheusRules); err != nil {
			return fmt.Errorf("vault: write policy %s: %w", prometheusPolicy, err)
		}
	}
	role, err := p.vault.Logical().ReadWithContext(ctx, jwtRolePath)
	if err != nil {
		return err
	}
	var have map[string]any
	if role != nil {
		have = role.Data
	}
	if roleDiffers(have, prometheusRoleData()) {
		if _, err := p.vault.Logical().WriteWithContext(ctx, jwtRolePath, prometheusRoleData()); err != nil {
			return fmt.Errorf("vault: write %s: %w", jwtRolePath, err)
		}
	}
	return nil
}
