package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/nomadjob"
	"github.com/platform-bootstrap/bootstrap/internal/parallel"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
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
func parse(ctx context.Context, p *platform, sp Spec) (*nomadapi.Job, error) {
	src, err := platformjobs.File(sp.Name)
	if err != nil {
		return nil, err
	}
	vars, err := sp.Vars.Encode()
	if err != nil {
		return nil, err
	}
	job, err := p.nomad.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{JobHCL: src, Variables: vars, Canonicalize: true})
	if err != nil {
		return nil, fmt.Errorf("job %s: parse: %w", sp.Name, err)
	}
	ns := platformjobs.Namespace
	job.Namespace = &ns
	for k, d := range map[string]string{secretsMeta: secretsDigest(p, sp.Name), binaryMeta: binaryDigest(sp.Vars)} {
		if d == "" {
			continue
		}
		if job.Meta == nil {
			job.Meta = map[string]string{}
		}
		job.Meta[k] = d
	}
	return job, nil
}

// binaryMeta is the job meta key that changes with the file the job's
// binary (raw_exec profile) is: a new one, such as make tools links after
// a version bump, changes the job, and Nomad replaces its allocations by
// its update rules (one at a time, each healthy before the next), as for
// a new image in the Docker profile.
const binaryMeta = "bootstrap_binary"

// binaryDigest is a short hash of which file the binary of vars is (its
// path, size and time), "" for a job without one.
func binaryDigest(vars platformjobs.Variables) string {
	path, _ := vars["binary"].(string)
	if path == "" {
		return ""
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return ""
	}
	fi, err := os.Stat(real)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s %d %d", real, fi.Size(), fi.ModTime().UnixNano()))
	return hex.EncodeToString(sum[:8])
}

// convergeJob plans job sp: it is registered when Nomad's plan shows a
// difference, and restarted when it is unchanged but failed. It does not
// wait for the job: when applying, the caller waits for every job at once
// (waitAll) until each is healthy.
func convergeJob(ctx context.Context, p *platform, pl *reconcile.Plan, sp Spec) error {
	job, err := parse(ctx, p, sp)
	if err != nil {
		return err
	}
	resp, err := nomadjob.Plan(ctx, p.nomad, job)
	if err != nil {
		return fmt.Errorf("job %s: plan: %w", sp.Name, err)
	}
	target := "job " + platformjobs.Namespace + "/" + sp.Name
	if nomadjob.Changed(resp) {
		action := reconcile.Update
		if nomadjob.Added(resp) {
			action = reconcile.Create
		}
		err = pl.Do(action, target, nomadjob.Summary(resp.Diff), func() error {
			if _, err := nomadjob.Register(ctx, p.nomad, job, resp); err != nil {
				return err
			}
			crashpoint.Hit("jobs:after-register")
			return nil
		})
	} else {
		// The job is what the configuration says; whether it runs is
		// another question, asked of its allocations: a run killed while it
		// waited for the job, or a reboot of the nodes, leaves a job that is
		// registered but not (yet) healthy.
		var h nomadjob.Health
		if h, err = nomadjob.Check(ctx, p.nomad, platformjobs.Namespace, sp.Name); err != nil {
			return err
		}
		switch {
		case h.Failed:
			err = pl.Do(reconcile.Restart, target, h.Status, func() error { return restart(ctx, p, job, h) })
		case !h.Healthy:
			err = pl.Do(reconcile.Wait, target, h.Status, nil)
		}
	}
	return err
}

// waitAll waits until every job of specs is healthy, all at once, and
// returns every job's error.
func waitAll(ctx context.Context, e *stages.Env, p *platform, specs []Spec) error {
	for _, sp := range specs {
		e.Step("waiting for job %s to be healthy", sp.Name)
	}
	return parallel.Each(specs, func(sp Spec) error { return waitHealthy(ctx, p, sp.Name) })
}

func waitHealthy(ctx context.Context, p *platform, id string) error {
	return nomadjob.WaitHealthy(ctx, p.nomad, platformjobs.Namespace, id, healthTimeout)
}

// restart brings a failed job back. Nomad never replaces a system job's
// failed allocation, and places nothing more for a version whose deployment
// failed; nothing of the job runs either way.
func restart(ctx context.Context, p *platform, job *nomadapi.Job, h nomadjob.Health) error {
	if h.DeploymentFailed {
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
	return poll.Until(ctx, time.Minute, time.Second, func() (bool, error) {
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

// staleJobs are platform jobs that run but the configuration disables.
func staleJobs(ctx context.Context, p *platform, specs []Spec) ([]string, error) {
	list, _, err := p.nomad.Jobs().List((&nomadapi.QueryOptions{Namespace: platformjobs.Namespace}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	var out []string
	for _, j := range list {
		if j.Status == "dead" || !slices.Contains(platformjobs.Names(), j.ID) {
			continue
		}
		if !slices.ContainsFunc(specs, func(s Spec) bool { return s.Name == j.ID }) {
			out = append(out, j.ID)
		}
	}
	return out, nil
}

func stopJob(ctx context.Context, p *platform, id string) error {
	return stopJobIn(ctx, p, platformjobs.Namespace, id)
}

// stopJobIn stops a job, waits until its allocations on live clients
// stopped, and purges it. (Purging at once would hide allocations that
// still run.) An allocation on a client that is down (or that Nomad's
// state only remembers, as after a restore that did not finish) stays
// "running" forever: nothing of it runs that waiting could stop.
func stopJobIn(ctx context.Context, p *platform, ns, id string) error {
	w := (&nomadapi.WriteOptions{Namespace: ns}).WithContext(ctx)
	if _, _, err := p.nomad.Jobs().Deregister(id, false, w); err != nil {
		return fmt.Errorf("stop job %s/%s: %w", ns, id, err)
	}
	q := (&nomadapi.QueryOptions{Namespace: ns}).WithContext(ctx)
	err := poll.Until(ctx, 2*time.Minute, time.Second, func() (bool, error) {
		allocs, _, err := p.nomad.Jobs().Allocations(id, true, q)
		if err != nil {
			return false, fmt.Errorf("job %s/%s: allocations: %w", ns, id, err)
		}
		nodes, _, err := p.nomad.Nodes().List(q)
		if err != nil {
			return false, fmt.Errorf("job %s/%s: nodes: %w", ns, id, err)
		}
		ready := map[string]bool{}
		for _, n := range nodes {
			ready[n.ID] = n.Status == nomadapi.NodeStatusReady
		}
		for _, a := range allocs {
			if (a.ClientStatus == "running" || a.ClientStatus == "pending") && ready[a.NodeID] {
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

// convergeKV writes the jobs' secrets that differ in Vault KV, and deletes
// the ingress certificates no job reads any more.
func convergeKV(ctx context.Context, p *platform, pl *reconcile.Plan) error {
	for _, path := range slices.Sorted(maps.Keys(p.kv)) {
		fields := p.kv[path]
		d, err := kvDiffers(ctx, p, path, fields)
		if err != nil {
			return err
		}
		if !d {
			continue
		}
		err = pl.Do(reconcile.Update, "vault kv secret/"+path, "a platform job's secret", func() error {
			data := map[string]any{}
			for k, v := range fields {
				data[k] = v
			}
			_, err := p.vault.Logical().WriteWithContext(ctx, "secret/data/"+path, map[string]any{"data": data})
			return err
		})
		if err != nil {
			return err
		}
	}
	// Ingress certificates whose tls block, or namespace, is gone: one list
	// instead of a read per namespace, and it finds those of namespaces the
	// configuration no longer has.
	list, err := p.vault.Logical().ListWithContext(ctx, "secret/metadata/general/fabio")
	if err != nil {
		return fmt.Errorf("vault: list secret/general/fabio: %w", err)
	}
	var keys []any
	if list != nil {
		keys, _ = list.Data["keys"].([]any)
	}
	for _, k := range keys {
		path := "general/fabio/" + fmt.Sprint(k)
		if !strings.HasPrefix(path, ingressTLSPrefix) || p.kv[path] != nil {
			continue
		}
		err := pl.Do(reconcile.Delete, "vault kv secret/"+path, "no job reads it any more", func() error {
			_, err := p.vault.Logical().DeleteWithContext(ctx, "secret/metadata/"+path)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// convergeVault plans the jobs' secrets in Vault KV, the policy that lets
// Prometheus read Vault's metrics and the JWT role it logs in with.
func convergeVault(ctx context.Context, p *platform, pl *reconcile.Plan) error {
	if err := convergeKV(ctx, p, pl); err != nil {
		return err
	}
	pol, err := p.vault.Sys().GetPolicyWithContext(ctx, prometheusPolicy)
	if err != nil {
		return fmt.Errorf("vault: read policy %s: %w", prometheusPolicy, err)
	}
	if strings.TrimSpace(pol) != strings.TrimSpace(prometheusRules) {
		err := pl.Do(reconcile.Update, "vault policy "+prometheusPolicy, "", func() error {
			return p.vault.Sys().PutPolicyWithContext(ctx, prometheusPolicy, prometheusRules)
		})
		if err != nil {
			return err
		}
	}
	role, err := p.vault.Logical().ReadWithContext(ctx, jwtRolePath)
	if err != nil {
		return fmt.Errorf("vault: read %s: %w", jwtRolePath, err)
	}
	var have map[string]any
	if role != nil {
		have = role.Data
	}
	if len(reconcile.Differences(have, prometheusRoleData())) == 0 {
		return nil
	}
	return pl.Do(reconcile.Update, "vault "+jwtRolePath, "Prometheus reads Vault's metrics", func() error {
		_, err := p.vault.Logical().WriteWithContext(ctx, jwtRolePath, prometheusRoleData())
		return err
	})
}
