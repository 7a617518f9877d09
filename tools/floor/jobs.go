package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/nomadjob"
	"github.com/platform-bootstrap/bootstrap/internal/parallel"
	platformjobs "github.com/platform-bootstrap/bootstrap/jobs"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
	jobsstage "github.com/platform-bootstrap/bootstrap/stages/jobs"
)

// jobs is the jobs stage's work: the jobs' secrets in Vault KV, the policy
// and JWT role of Prometheus, then every platform job parsed, registered
// and awaited at once until healthy (nomadjob.Check, the stage's own test
// of health).
func (p *platform) jobs(ctx context.Context) error {
	vc, err := p.vaultClient(ctx)
	if err != nil {
		return err
	}
	nc, err := cluster.NomadServer(p.e, p.nomadMgmt)
	if err != nil {
		return err
	}
	get := func(name string) string { v, _, _ := p.e.Secrets.Get(name); return v }
	pw, err := password()
	if err != nil {
		return err
	}
	if err := p.e.Secrets.Put(stages.SecretGrafanaAdminPassword, pw); err != nil {
		return err
	}
	kv := map[string]map[string]string{
		"general/fabio/consul":      {"token": get(stages.SecretConsulFabioToken)},
		"general/prometheus/tokens": {"consul": get(stages.SecretConsulPrometheusToken), "nomad": get(stages.SecretNomadPrometheusToken)},
		"general/grafana/admin":     {"password": pw},
	}
	for _, ns := range p.e.Config.Nomad.Namespaces {
		kv["general/fabio/consul-"+ns] = map[string]string{"token": get(stages.SecretConsulFabioNamespaceToken(ns))}
	}
	var work []func() error
	for path, fields := range kv {
		work = append(work, func() error {
			data := map[string]any{}
			for k, v := range fields {
				data[k] = v
			}
			_, err := vc.Logical().WriteWithContext(ctx, "secret/data/"+path, map[string]any{"data": data})
			return err
		})
	}
	work = append(work, func() error {
		if err := vc.Sys().PutPolicyWithContext(ctx, "prometheus-metrics", "path \"sys/metrics\" {\n  capabilities = [\"read\"]\n}\n"); err != nil {
			return err
		}
		_, err := vc.Logical().WriteWithContext(ctx, "auth/jwt-nomad/role/prometheus", map[string]any{
			"role_type": "jwt", "bound_audiences": []string{"vault.io"},
			"bound_claims": map[string]any{"nomad_namespace": platformjobs.Namespace, "nomad_job_id": platformjobs.Prometheus},
			"user_claim":   "/nomad_job_id", "user_claim_json_pointer": true,
			"claim_mappings": map[string]any{"nomad_namespace": "nomad_namespace", "nomad_job_id": "nomad_job_id", "nomad_task": "nomad_task"},
			"token_type":     "service", "token_policies": []string{pki.PolicyNomadWorkloads, "prometheus-metrics"}, "token_period": 1800,
		})
		return err
	})
	specs, err := jobsstage.Specs(p.e, p.inv)
	if err != nil {
		return err
	}
	parsed := make([]*nomadapi.Job, len(specs))
	for i, sp := range specs {
		work = append(work, func() error {
			src, err := platformjobs.File(sp.Name)
			if err != nil {
				return err
			}
			vars, err := sp.Vars.Encode()
			if err != nil {
				return err
			}
			job, err := nc.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{JobHCL: src, Variables: vars, Canonicalize: true})
			if err != nil {
				return fmt.Errorf("job %s: parse: %w", sp.Name, err)
			}
			ns := platformjobs.Namespace
			job.Namespace = &ns
			parsed[i] = job
			return nil
		})
	}
	if err := parallel.Do(work...); err != nil {
		return err
	}
	work = work[:0]
	start := time.Now()
	for _, job := range parsed {
		work = append(work, func() error {
			if _, _, err := nc.Jobs().Register(job, (&nomadapi.WriteOptions{Namespace: platformjobs.Namespace}).WithContext(ctx)); err != nil {
				return fmt.Errorf("job %s: register: %w", *job.ID, err)
			}
			err := poll(ctx, 250*time.Millisecond, func() error {
				h, err := nomadjob.Check(ctx, nc, platformjobs.Namespace, *job.ID)
				switch {
				case err != nil:
					return err
				case h.Failed:
					return fmt.Errorf("job %s failed: %s", *job.ID, h.Status)
				case !h.Healthy:
					return fmt.Errorf("job %s: %s", *job.ID, h.Status)
				}
				return nil
			})
			if err == nil {
				fmt.Fprintf(os.Stderr, "floor: job %s healthy after %.1fs\n", *job.ID, time.Since(start).Seconds())
			}
			return err
		})
	}
	return parallel.Do(work...)
}

// password is the jobs stage's Grafana admin password: 24 characters.
func password() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}
