package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	"gopkg.in/yaml.v3"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	nomadstage "github.com/platform-bootstrap/bootstrap/stages/nomad"
)

// pythonBin is the interpreter of the test job's HTTP server: Debian's, at a
// fixed path, since a raw_exec task does not get this shell's PATH.
const pythonBin = "/usr/bin/python3"

// deployCluster is a Nomad cluster with the platform's namespaces and a CI
// token holding exactly the platform's deploy policies of dev and prod.
type deployCluster struct {
	nomad   *testcluster.Nomad
	mgmt    *nomadapi.Client // management token: the test's own checks
	ciToken string
}

func startDeployCluster(t *testing.T) *deployCluster {
	t.Helper()
	if _, err := os.Stat(pythonBin); err != nil {
		if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s is needed for the test job's HTTP server: %v", pythonBin, err)
		}
		t.Skipf("%s is needed for the test job's HTTP server: %v", pythonBin, err)
	}
	n := testcluster.StartNomad(t, testcluster.NomadOptions{Servers: 1, Clients: 1, ACL: true})
	c := n.Client
	for _, ns := range []string{"dev", "prod", config.GeneralNamespace} {
		if _, err := c.Namespaces().Register(&nomadapi.Namespace{Name: ns}, nil); err != nil {
			t.Fatalf("namespace %s: %v", ns, err)
		}
	}
	cfg := config.Defaults()
	cfg.Provider.Local = &config.LocalProvider{}
	// The tests deploy to dev and prod with one token holding both
	// namespaces' deploy policies, exactly as the nomad stage writes them.
	var policies []string
	for _, ns := range []string{"dev", "prod"} {
		name := nomadstage.DeployPolicy(ns)
		rules, ok := nomadstage.Policies(cfg)[name]
		if !ok {
			t.Fatalf("nomad.Policies has no %q", name)
		}
		if _, err := c.ACLPolicies().Upsert(&nomadapi.ACLPolicy{Name: name, Rules: rules}, nil); err != nil {
			t.Fatalf("%s policy: %v", name, err)
		}
		policies = append(policies, name)
	}
	tok, _, err := c.ACLTokens().Create(&nomadapi.ACLToken{Name: "ci", Type: "client", Policies: policies}, nil)
	if err != nil {
		t.Fatalf("CI token: %v", err)
	}
	return &deployCluster{nomad: n, mgmt: c, ciToken: tok.SecretID}
}

// env is the environment of a CI job: the Nomad connection with the CI
// token, and nothing of this machine's NOMAD_* or CI_* variables.
func (dc *deployCluster) env(t *testing.T, extra ...string) []string {
	t.Helper()
	var env []string
	for _, kv := range childEnv(t) {
		if strings.HasPrefix(kv, "NOMAD_") || strings.HasPrefix(kv, "CI_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "NOMAD_ADDR="+dc.nomad.HTTPAddrs[0], "NOMAD_TOKEN="+dc.ciToken)
	return append(env, extra...)
}

// runDeploy runs `bootstrap deploy` with env in dir.
func runDeploy(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"deploy"}, args...)...)
	cmd.Dir, cmd.Env = dir, env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run deploy %v: %v", args, err)
	}
	r := result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
	t.Logf("bootstrap deploy %s → exit %d\n--- stdout\n%s--- stderr\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

func writeJobFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// webJob is a service job whose task runs script under /bin/sh: with a
// real HTTP server it passes its Nomad service check, with `exit 1` it
// fails. One canary, promoted automatically: a failing version never
// touches the running allocation. No restarts, no rescheduling: a failure
// fails the deployment at once.
func webJob(namespaceLine, script string) string {
	return fmt.Sprintf(`variable "namespace" {
  type    = string
  default = "dev"
}

job "web" {
  %s
  datacenters = ["dc1"]
  type        = "service"

  meta {
    commit = "${CI_COMMIT_SHORT_SHA}"
  }

  update {
    health_check      = "checks"
    min_healthy_time  = "1s"
    healthy_deadline  = "30s"
    progress_deadline = "1m"
    canary            = 1
    auto_promote      = true
    auto_revert       = false
  }

  group "web" {
    network {
      port "http" {}
    }
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    service {
      provider = "nomad"
      name     = "web"
      port     = "http"
      tags     = ["prometheus", "urlprefix-/web"]
      check {
        type     = "http"
        path     = "/"
        interval = "1s"
        timeout  = "1s"
      }
    }
    task "server" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", %q]
      }
      resources {
        cpu    = 50
        memory = 64
      }
    }
  }
}
`, namespaceLine, script)
}

const (
	goodScript = "echo serving; exec " + pythonBin + " -m http.server ${NOMAD_PORT_http} --bind ${NOMAD_IP_http}"
	badScript  = "echo starting; echo 'fatal: cannot read /etc/web/config.yml' >&2; exit 1"
	hungScript = "echo hanging; exec sleep 600"
)

// jobIndex is the index of the cluster's jobs table: it moves with every
// job write in any namespace.
func (dc *deployCluster) jobIndex(t *testing.T) uint64 {
	t.Helper()
	_, qm, err := dc.mgmt.Jobs().List(&nomadapi.QueryOptions{Namespace: "*"})
	if err != nil {
		t.Fatal(err)
	}
	return qm.LastIndex
}

func (dc *deployCluster) job(t *testing.T, ns, id string) *nomadapi.Job {
	t.Helper()
	j, _, err := dc.mgmt.Jobs().Info(id, &nomadapi.QueryOptions{Namespace: ns})
	if err != nil {
		t.Fatalf("job %s/%s: %v", ns, id, err)
	}
	return j
}

// running returns the job's running allocations.
func (dc *deployCluster) running(t *testing.T, ns, id string) []*nomadapi.AllocationListStub {
	t.Helper()
	allocs, _, err := dc.mgmt.Jobs().Allocations(id, false, &nomadapi.QueryOptions{Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	var out []*nomadapi.AllocationListStub
	for _, a := range allocs {
		if a.ClientStatus == "running" && a.DesiredStatus == "run" {
			out = append(out, a)
		}
	}
	return out
}

func wantExit(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}

func wantOutput(t *testing.T, r result, substrs ...string) {
	t.Helper()
	all := r.stdout + r.stderr
	for _, s := range substrs {
		if !strings.Contains(all, s) {
			t.Errorf("output lacks %q\nstdout:\n%s\nstderr:\n%s", s, r.stdout, r.stderr)
		}
	}
}

// TestDeploy runs `bootstrap deploy` for real against a Nomad cluster with
// the platform's CI token: deploy, redeploy without changes, a failing
// version reverted, --no-revert, --plan-only, and the guard rails.
func TestDeploy(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Nomad cluster")
	}
	dc := startDeployCluster(t)
	dir := t.TempDir()
	good := writeJobFile(t, dir, "web.nomad.hcl", webJob("namespace = var.namespace", goodScript))
	bad := writeJobFile(t, dir, "web-bad.nomad.hcl", webJob("namespace = var.namespace", badScript))
	// NOMAD_NAMESPACE and NOMAD_REGION are not deploy's: the namespace is
	// the job's, and a region that does not exist would fail every call.
	env := dc.env(t, "CI_COMMIT_SHORT_SHA=0a1b2c3d", "NOMAD_NAMESPACE=prod", "NOMAD_REGION=elsewhere")

	var firstAlloc string
	var v0 uint64
	t.Run("good job becomes healthy", func(t *testing.T) {
		r := runDeploy(t, dir, env, good, "--namespace", "dev")
		wantExit(t, r, exitOK)
		wantOutput(t, r, "substituted from the environment: CI_COMMIT_SHORT_SHA", "+ Job: \"web\"", `group "web": desired 1, placed 1, healthy 1, unhealthy 0`, "healthy")
		if strings.Contains(r.stdout, "warning:") {
			t.Errorf("a job whose service has the prometheus tag was warned about")
		}
		j := dc.job(t, "dev", "web")
		if j.Meta["commit"] != "0a1b2c3d" {
			t.Errorf("meta.commit = %q, want the substituted CI_COMMIT_SHORT_SHA", j.Meta["commit"])
		}
		if !*j.Stable {
			t.Errorf("version %d is not stable after a healthy deployment", *j.Version)
		}
		run := dc.running(t, "dev", "web")
		if len(run) != 1 {
			t.Fatalf("%d running allocations, want 1", len(run))
		}
		firstAlloc, v0 = run[0].ID, *j.Version
	})
	if firstAlloc == "" {
		t.FailNow()
	}

	t.Run("same job again changes nothing", func(t *testing.T) {
		before := dc.job(t, "dev", "web")
		idx := dc.jobIndex(t)
		r := runDeploy(t, dir, env, good, "--namespace", "dev")
		wantExit(t, r, exitOK)
		wantOutput(t, r, "plan: no changes")
		after := dc.job(t, "dev", "web")
		if *after.Version != *before.Version || *after.JobModifyIndex != *before.JobModifyIndex || *after.ModifyIndex != *before.ModifyIndex {
			t.Errorf("job changed: version %d→%d, modify index %d→%d", *before.Version, *after.Version, *before.ModifyIndex, *after.ModifyIndex)
		}
		if got := dc.jobIndex(t); got != idx {
			t.Errorf("jobs index moved %d→%d", idx, got)
		}
	})

	t.Run("plan-only", func(t *testing.T) {
		idx := dc.jobIndex(t)
		r := runDeploy(t, dir, env, good, "--namespace", "dev", "--plan-only")
		wantExit(t, r, exitOK)
		r = runDeploy(t, dir, env, bad, "--namespace", "dev", "--plan-only")
		wantExit(t, r, exitChanges)
		wantOutput(t, r, "+/- Job: \"web\"", "+/- Task: \"server\"", "fatal: cannot read", "nothing registered")
		if got := dc.jobIndex(t); got != idx {
			t.Errorf("plan-only moved the jobs index %d→%d", idx, got)
		}
		if v := *dc.job(t, "dev", "web").Version; v != v0 {
			t.Errorf("plan-only: version %d, want %d", v, v0)
		}
	})

	t.Run("failing version is reverted", func(t *testing.T) {
		r := runDeploy(t, dir, env, bad, "--namespace", "dev", "--timeout", "2m")
		wantExit(t, r, exitFailure)
		wantOutput(t, r,
			"FAILED",
			`task "server": dead, failed`,
			"Terminated", // the task event
			"| fatal: cannot read /etc/web/config.yml", // the last log lines
			fmt.Sprintf("reverting job \"web\" to version %d", v0),
		)
		j := dc.job(t, "dev", "web")
		if *j.Version != v0+2 {
			t.Errorf("version %d, want %d (the failed %d, then the revert)", *j.Version, v0+2, v0+1)
		}
		if !*j.Stable {
			t.Errorf("the reverted version %d is not stable", *j.Version)
		}
		if args := j.TaskGroups[0].Tasks[0].Config["args"].([]any); args[1] != goodScript {
			t.Errorf("reverted job runs %q", args[1])
		}
		run := dc.running(t, "dev", "web")
		if len(run) != 1 || run[0].ID != firstAlloc {
			t.Errorf("running allocations %v, want only the first one %s", allocIDs(run), firstAlloc)
		}
	})

	t.Run("no-revert leaves it failed", func(t *testing.T) {
		before := *dc.job(t, "dev", "web").Version
		r := runDeploy(t, dir, env, bad, "--namespace", "dev", "--no-revert", "--timeout", "2m")
		wantExit(t, r, exitFailure)
		wantOutput(t, r, "--no-revert: leaving job")
		if strings.Contains(r.stdout, "reverting") {
			t.Error("--no-revert reverted")
		}
		j := dc.job(t, "dev", "web")
		if *j.Version != before+1 || *j.Stable {
			t.Errorf("version %d stable=%v, want the failed version %d, unstable", *j.Version, *j.Stable, before+1)
		}
		dep, _, err := dc.mgmt.Jobs().LatestDeployment("web", &nomadapi.QueryOptions{Namespace: "dev"})
		if err != nil || dep.Status != nomadapi.DeploymentStatusFailed {
			t.Errorf("latest deployment %+v (%v), want failed", dep, err)
		}
		// Running the same failed version again is reported, not hidden.
		r = runDeploy(t, dir, env, bad, "--namespace", "dev")
		wantExit(t, r, exitFailure)
		wantOutput(t, r, "plan: no changes", "whose deployment")
	})

	t.Run("timeout fails the deployment and reverts", func(t *testing.T) {
		// The task runs but never serves: its check never passes and the
		// deployment would wait until its deadline; --timeout ends it
		// first.
		hung := writeJobFile(t, dir, "web-hung.nomad.hcl", webJob("namespace = var.namespace", hungScript))
		versions, _, _, err := dc.mgmt.Jobs().Versions("web", false, &nomadapi.QueryOptions{Namespace: "dev"})
		if err != nil {
			t.Fatal(err)
		}
		var stable uint64
		for _, v := range versions {
			if *v.Stable && *v.Version > stable {
				stable = *v.Version
			}
		}
		before := *dc.job(t, "dev", "web").Version
		r := runDeploy(t, dir, env, hung, "--namespace", "dev", "--timeout", "6s")
		wantExit(t, r, exitFailure)
		wantOutput(t, r,
			"FAILED: not healthy after 6s",
			"marked failed",
			`check "service: \"web\" check" of service "web": failure`,
			"| hanging",
			fmt.Sprintf("reverting job \"web\" to version %d", stable),
			"reverted: job",
		)
		j := dc.job(t, "dev", "web")
		if *j.Version != before+2 || !*j.Stable {
			t.Errorf("version %d stable %v, want the revert %d, stable", *j.Version, *j.Stable, before+2)
		}
		deps, _, err := dc.mgmt.Jobs().Deployments("web", false, &nomadapi.QueryOptions{Namespace: "dev"})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range deps {
			if d.JobVersion == before+1 && d.Status != nomadapi.DeploymentStatusFailed {
				t.Errorf("the timed-out deployment is %s, want failed", d.Status)
			}
		}
		run := dc.running(t, "dev", "web")
		if len(run) != 1 || run[0].ID != firstAlloc {
			t.Errorf("running allocations %v, want only the first one %s", allocIDs(run), firstAlloc)
		}
	})

	t.Run("interrupted deploy leaves the deployment, the next run follows it", func(t *testing.T) {
		hung := writeJobFile(t, dir, "web-hung2.nomad.hcl", webJob("namespace = var.namespace", hungScript+" # again"))
		before := *dc.job(t, "dev", "web").Version
		cmd := exec.Command(bin, "deploy", hung, "--namespace", "dev")
		cmd.Dir, cmd.Env = dir, env
		var out syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for !strings.Contains(out.String(), "following") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		t.Logf("interrupted deploy → exit %d\n%s", cmd.ProcessState.ExitCode(), out.String())
		if code := cmd.ProcessState.ExitCode(); code != exitFailure {
			t.Fatalf("exit %d, want %d", code, exitFailure)
		}
		if s := out.String(); !strings.Contains(s, "interrupted: deployment") || strings.Contains(s, "reverting") || strings.Contains(s, "marked failed") {
			t.Errorf("an interrupted deploy touched the deployment:\n%s", s)
		}
		dep, _, err := dc.mgmt.Jobs().LatestDeployment("web", &nomadapi.QueryOptions{Namespace: "dev"})
		if err != nil || dep.JobVersion != before+1 || dep.Status != nomadapi.DeploymentStatusRunning {
			t.Fatalf("latest deployment %+v (%v), want version %d running", dep, err, before+1)
		}

		// The same job again: no new version; the running deployment is
		// followed, times out, and is failed and reverted.
		r := runDeploy(t, dir, env, hung, "--namespace", "dev", "--timeout", "4s")
		wantExit(t, r, exitFailure)
		wantOutput(t, r, "plan: no changes", "is still running: following it", "marked failed", "reverting")
		if j := dc.job(t, "dev", "web"); *j.Version != before+2 || !*j.Stable {
			t.Errorf("version %d stable %v, want the revert %d", *j.Version, *j.Stable, before+2)
		}
	})

	t.Run("a job with auto_revert is rolled back by Nomad, once", func(t *testing.T) {
		auto := func(script string) string {
			j := strings.Replace(webJob("namespace = var.namespace", script), `job "web"`, `job "auto"`, 1)
			return strings.Replace(j, "auto_revert       = false", "auto_revert       = true", 1)
		}
		good := writeJobFile(t, dir, "auto.nomad.hcl", auto(goodScript))
		bad := writeJobFile(t, dir, "auto-bad.nomad.hcl", auto(badScript))
		wantExit(t, runDeploy(t, dir, env, good, "--namespace", "prod", "--var", "namespace=prod"), exitOK)
		r := runDeploy(t, dir, env, bad, "--namespace", "prod", "--var", "namespace=prod", "--timeout", "2m")
		wantExit(t, r, exitFailure)
		wantOutput(t, r, "rolling back to job version 0", "rolled back by Nomad's auto_revert", "not reverting again")
		if strings.Contains(r.stdout, "reverting job") {
			t.Error("deploy reverted a job Nomad had already rolled back")
		}
		j := dc.job(t, "prod", "auto")
		if *j.Version != 2 {
			t.Errorf("version %d, want 2 (0 good, 1 failed, 2 Nomad's rollback)", *j.Version)
		}
	})

	t.Run("detach, then a second run follows to healthy", func(t *testing.T) {
		v2 := writeJobFile(t, dir, "web-v2.nomad.hcl", webJob("namespace = var.namespace", goodScript+" # v2"))
		before := *dc.job(t, "dev", "web").Version
		r := runDeploy(t, dir, env, v2, "--namespace", "dev", "--detach")
		wantExit(t, r, exitOK)
		wantOutput(t, r, "registered: evaluation", "detached")
		if strings.Contains(r.stdout, "following") {
			t.Error("--detach followed the deployment")
		}
		if v := *dc.job(t, "dev", "web").Version; v != before+1 {
			t.Errorf("version %d after --detach, want %d", v, before+1)
		}
		r = runDeploy(t, dir, env, v2, "--namespace", "dev")
		wantExit(t, r, exitOK)
		wantOutput(t, r, "plan: no changes")
		j := dc.job(t, "dev", "web")
		if *j.Version != before+1 || !*j.Stable {
			t.Errorf("version %d stable %v, want %d stable", *j.Version, *j.Stable, before+1)
		}
	})

	t.Run("batch job without a deployment", func(t *testing.T) {
		batch := func(id, script string) string {
			return fmt.Sprintf(`job %q {
  namespace = "dev"
  type      = "batch"
  group "run" {
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    task "run" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", %q]
      }
      resources {
        cpu    = 20
        memory = 32
      }
    }
  }
}
`, id, script)
		}
		ok := writeJobFile(t, dir, "batch-ok.nomad.hcl", batch("migrate", "echo migrated"))
		r := runDeploy(t, dir, env, ok, "--timeout", "2m")
		wantExit(t, r, exitOK)
		wantOutput(t, r, "has no deployment", "every allocation is complete")
		fail := writeJobFile(t, dir, "batch-fail.nomad.hcl", batch("broken-migrate", "echo 'no database' >&2; exit 3"))
		r = runDeploy(t, dir, env, fail, "--timeout", "2m")
		wantExit(t, r, exitFailure)
		wantOutput(t, r, "FAILED: an allocation failed", "Exit Code: 3", "| no database", "no earlier stable version")
	})

	t.Run("guard rails refuse before any write", func(t *testing.T) {
		noNS := writeJobFile(t, dir, "nons.nomad.hcl", strings.Replace(webJob("", goodScript), `job "web"`, `job "nons"`, 1))
		general := writeJobFile(t, dir, "general.nomad.hcl", strings.Replace(webJob(`namespace = "general"`, goodScript), `job "web"`, `job "gen"`, 1))
		def := writeJobFile(t, dir, "default.nomad.hcl", strings.Replace(webJob(`namespace = "default"`, goodScript), `job "web"`, `job "def"`, 1))
		latest := writeJobFile(t, dir, "latest.nomad.hcl", dockerJob("latest", `image = "registry.example/web:latest"`, `["prometheus"]`))
		untagged := writeJobFile(t, dir, "untagged.nomad.hcl", dockerJob("untagged", `image = "registry.example:5000/team/web"`, `["prometheus"]`))
		cases := []struct {
			name, file string
			args       []string
			want       string
			gone       [2]string // namespace, job that must not exist
		}{
			{"no namespace", noNS, nil, "the job has no namespace", [2]string{"dev", "nons"}},
			{"general in the file", general, nil, `namespace "general" holds the platform's own jobs`, [2]string{"general", "gen"}},
			{"general by flag", good, []string{"--namespace", "general"}, `--namespace: namespace "general"`, [2]string{"general", "web"}},
			{"general by variable", good, []string{"--var", "namespace=general"}, `namespace "general" holds the platform's own jobs`, [2]string{"general", "web"}},
			{"default", def, nil, `namespace "default" is not an application namespace`, [2]string{"default", "def"}},
			{"flag disagrees with the file", general, []string{"--namespace", "prod"}, `the job says namespace = "general" but --namespace is "prod"`, [2]string{"prod", "gen"}},
			{":latest", latest, []string{"--namespace", "dev"}, `image "registry.example/web:latest" is :latest`, [2]string{"dev", "latest"}},
			{"untagged", untagged, []string{"--namespace", "dev"}, `image "registry.example:5000/team/web" has no tag`, [2]string{"dev", "untagged"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				idx := dc.jobIndex(t)
				r := runDeploy(t, dir, env, append([]string{c.file}, c.args...)...)
				wantExit(t, r, exitUsage)
				wantOutput(t, r, c.want)
				if got := dc.jobIndex(t); got != idx {
					t.Errorf("jobs index moved %d→%d", idx, got)
				}
				_, _, err := dc.mgmt.Jobs().Info(c.gone[1], &nomadapi.QueryOptions{Namespace: c.gone[0]})
				if err == nil || !strings.Contains(err.Error(), "404") {
					t.Errorf("job %s/%s: %v, want not found", c.gone[0], c.gone[1], err)
				}
			})
		}
	})

	t.Run("allow-latest and the prometheus warning", func(t *testing.T) {
		noTag := writeJobFile(t, dir, "notag.nomad.hcl", dockerJob("notag", `image = "registry.example/web"`, `["urlprefix-/notag"]`))
		r := runDeploy(t, dir, env, noTag, "--namespace", "dev", "--allow-latest", "--plan-only")
		wantExit(t, r, exitChanges)
		wantOutput(t, r, `warning: service "notag" (group "notag") has no "prometheus" tag`)
	})

	t.Run("bad input", func(t *testing.T) {
		badHCL := writeJobFile(t, dir, "broken.nomad.hcl", "job \"broken\" {\n  namespace = \"dev\"\n  group \"g\" {\n    count = \n  }\n}\n")
		badVars := writeJobFile(t, dir, "bad.vars.hcl", "namespace = \"dev\"\nport = [\n")
		wrongType := writeJobFile(t, dir, "typed.nomad.hcl", "variable \"n\" {\n  type = number\n}\n\njob \"typed\" {\n  namespace = \"dev\"\n  group \"g\" {\n    count = var.n\n    task \"t\" {\n      driver = \"raw_exec\"\n      config {\n        command = \"/bin/true\"\n      }\n    }\n  }\n}\n")
		idx := dc.jobIndex(t)
		for _, c := range []struct {
			name string
			args []string
			want string
		}{
			{"HCL error", []string{badHCL}, "broken.nomad.hcl:4,"},
			{"variables file error", []string{good, "--var-file", badVars}, "bad.vars.hcl:3,"},
			{"variable of the wrong type", []string{wrongType, "--var", "n=many"}, "--var n"},
			{"missing file", []string{filepath.Join(dir, "nope.nomad.hcl")}, "no such file"},
			{"bad --var", []string{good, "--var", "novalue"}, "want NAME=VALUE"},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := runDeploy(t, dir, env, c.args...)
				wantExit(t, r, exitUsage)
				wantOutput(t, r, c.want)
			})
		}
		r := runDeploy(t, dir, slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "NOMAD_ADDR=") }), good)
		wantExit(t, r, exitUsage)
		wantOutput(t, r, "NOMAD_ADDR is not set")
		if got := dc.jobIndex(t); got != idx {
			t.Errorf("jobs index moved %d→%d", idx, got)
		}
	})

	t.Run("gitlab template scripts", func(t *testing.T) { testTemplateScripts(t, dc) })

	t.Run("no config file needed", func(t *testing.T) {
		// deploy runs in a CI job's checkout: there is no platform.hcl,
		// and the root's --config default must not matter.
		empty := t.TempDir()
		r := runDeploy(t, empty, env, good, "--namespace", "dev", "--plan-only")
		if r.code != exitOK && r.code != exitChanges {
			t.Fatalf("exit %d without platform.hcl", r.code)
		}
		if _, err := os.Stat(filepath.Join(empty, ".bootstrap")); err == nil {
			t.Error("deploy created a state directory")
		}
	})
}

// dockerJob is a job with a docker task: it is only planned here (there
// is no Docker engine), which is enough for the image guard rail.
func dockerJob(id, imageLine, tags string) string {
	return fmt.Sprintf(`job %q {
  group %q {
    network {
      port "http" {
        to = 8080
      }
    }
    service {
      provider = "nomad"
      name     = %q
      port     = "http"
      tags     = %s
    }
    task "web" {
      driver = "docker"
      config {
        %s
        ports = ["http"]
      }
    }
  }
}
`, id, id, id, tags, imageLine)
}

func allocIDs(allocs []*nomadapi.AllocationListStub) []string {
	var out []string
	for _, a := range allocs {
		out = append(out, a.ID)
	}
	return out
}

// ciTemplate is the GitLab CI template, relative to the repository.
const ciTemplate = "ci/gitlab/deploy.gitlab-ci.yml"

func loadYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc
}

// ciKeywords are the top-level keys of a GitLab CI file that are not jobs.
var ciKeywords = map[string]bool{"stages": true, "variables": true, "workflow": true, "include": true, "default": true, "image": true, "services": true, "cache": true, "before_script": true, "after_script": true}

// resolveJob returns a job with its `extends` applied the way GitLab does:
// hashes merged deeply, everything else (lists, strings) replaced by the
// extending job's.
func resolveJob(t *testing.T, doc map[string]any, name string) map[string]any {
	t.Helper()
	job, ok := doc[name].(map[string]any)
	if !ok {
		t.Fatalf("no job %q", name)
	}
	ext, ok := job["extends"]
	if !ok {
		return job
	}
	var bases []string
	switch e := ext.(type) {
	case string:
		bases = []string{e}
	case []any:
		for _, b := range e {
			bases = append(bases, b.(string))
		}
	}
	out := map[string]any{}
	for _, b := range bases {
		out = mergeYAML(out, resolveJob(t, doc, b))
	}
	out = mergeYAML(out, job)
	delete(out, "extends")
	return out
}

func mergeYAML(base, over map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = mergeYAML(bm, om)
				continue
			}
		}
		out[k] = v
	}
	return out
}

func yamlList(t *testing.T, v any) []string {
	t.Helper()
	var out []string
	switch l := v.(type) {
	case nil:
	case string:
		out = []string{l}
	case []any:
		for _, x := range l {
			out = append(out, fmt.Sprint(x))
		}
	default:
		t.Fatalf("not a list: %#v", v)
	}
	return out
}

// TestGitLabTemplate checks the template's structure: stages, the jobs of
// each pipeline, their rules, environments and needs, and the example
// that includes it.
func TestGitLabTemplate(t *testing.T) {
	root := testcluster.RepoRoot()
	doc := loadYAML(t, filepath.Join(root, ciTemplate))

	if got := yamlList(t, doc["stages"]); !slices.Equal(got, []string{"test", "build", "deploy"}) {
		t.Errorf("stages %v", got)
	}
	stages := yamlList(t, doc["stages"])
	jobs := map[string]map[string]any{}
	for name := range doc {
		if ciKeywords[name] || strings.HasPrefix(name, ".") {
			continue
		}
		jobs[name] = resolveJob(t, doc, name)
	}
	for _, want := range []string{"build", "deploy:dev", "deploy:prod", "plan:dev"} {
		if jobs[want] == nil {
			t.Errorf("no job %q", want)
		}
	}
	for name, j := range jobs {
		if !slices.Contains(stages, fmt.Sprint(j["stage"])) {
			t.Errorf("job %s: stage %v is not one of %v", name, j["stage"], stages)
		}
		for _, n := range yamlList(t, j["needs"]) {
			if jobs[n] == nil {
				t.Errorf("job %s needs %q, which is not a job", name, n)
			}
		}
		if len(yamlList(t, j["script"])) == 0 {
			t.Errorf("job %s has no script", name)
		}
	}

	build := jobs["build"]
	if img := build["image"].(map[string]any); !strings.Contains(fmt.Sprint(doc["variables"].(map[string]any)["KANIKO_IMAGE"]), "kaniko-project/executor") || img["name"] != "${KANIKO_IMAGE}" || !slices.Equal(yamlList(t, img["entrypoint"]), []string{""}) {
		t.Errorf("build image %v: want kaniko with an empty entrypoint", img)
	}
	if s := strings.Join(yamlList(t, build["script"]), "\n"); !strings.Contains(s, "/kaniko/executor") || !strings.Contains(s, ":${CI_COMMIT_SHORT_SHA}") {
		t.Errorf("build script does not push the commit's image:\n%s", s)
	}

	for _, c := range []struct {
		job, env, rule, when string
		planOnly             bool
	}{
		{"deploy:dev", "dev", "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "", false},
		{"deploy:prod", "prod", "$CI_COMMIT_TAG", "manual", false},
		{"plan:dev", "dev", `$CI_PIPELINE_SOURCE == "merge_request_event"`, "", true},
	} {
		j := jobs[c.job]
		if j == nil {
			continue
		}
		if j["stage"] != "deploy" {
			t.Errorf("%s: stage %v", c.job, j["stage"])
		}
		env, _ := j["environment"].(map[string]any)
		if env["name"] != c.env {
			t.Errorf("%s: environment %v, want %s", c.job, env, c.env)
		}
		rules, _ := j["rules"].([]any)
		if len(rules) != 1 {
			t.Fatalf("%s: rules %v", c.job, rules)
		}
		r := rules[0].(map[string]any)
		if r["if"] != c.rule || fmt.Sprint(r["when"]) != cmp.Or(c.when, "<nil>") {
			t.Errorf("%s: rule %v, want if %q when %q", c.job, r, c.rule, c.when)
		}
		script := strings.Join(yamlList(t, j["script"]), "\n")
		if !strings.Contains(script, "bootstrap deploy") || strings.Contains(script, "--plan-only") != c.planOnly {
			t.Errorf("%s: script %q", c.job, script)
		}
		if c.planOnly {
			af, _ := j["allow_failure"].(map[string]any)
			if !slices.Contains(yamlList(t, af["exit_codes"]), "4") {
				t.Errorf("%s: allow_failure %v, want exit code 4 (changes pending) allowed", c.job, j["allow_failure"])
			}
			if env["action"] != "prepare" {
				t.Errorf("%s: a plan must not create a deployment of the environment: action %v", c.job, env["action"])
			}
		} else if !slices.Equal(yamlList(t, j["needs"]), []string{"build"}) {
			t.Errorf("%s: needs %v, want [build]", c.job, j["needs"])
		}
	}

	// The example includes the template and names a job file it has.
	exDir := filepath.Join(root, "ci", "gitlab", "example")
	ex := loadYAML(t, filepath.Join(exDir, ".gitlab-ci.yml"))
	inc, _ := ex["include"].([]any)
	if len(inc) != 1 || inc[0].(map[string]any)["file"] != ciTemplate {
		t.Errorf("example include %v, want the template %s", ex["include"], ciTemplate)
	}
	jf := fmt.Sprint(ex["variables"].(map[string]any)["DEPLOY_JOB_FILE"])
	if _, err := os.Stat(filepath.Join(exDir, jf)); err != nil {
		t.Errorf("example DEPLOY_JOB_FILE: %v", err)
	}
	if test, _ := ex["test"].(map[string]any); test["stage"] != "test" {
		t.Errorf("example test job %v", ex["test"])
	}
}

// ciJobEnv is the environment GitLab gives a job: the template's and the
// job's variables (expanded against what is already defined, as GitLab
// does) over the predefined and CI/CD variables in base.
func ciJobEnv(doc, job map[string]any, base []string) []string {
	m := ciEnvMap(base)
	for _, vars := range []any{doc["variables"], job["variables"]} {
		vm, _ := vars.(map[string]any)
		for _, k := range slices.Sorted(maps.Keys(vm)) {
			if _, set := m[k]; set {
				continue // CI/CD variables win over the file's defaults
			}
			m[k] = os.Expand(fmt.Sprint(vm[k]), func(n string) string { return m[n] })
		}
	}
	var env []string
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	return env
}

func ciEnvMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// runCIJob runs a template job's before_script and script with bash, the
// way a GitLab runner does (stop at the first failing command).
func runCIJob(t *testing.T, doc map[string]any, name, dir string, base []string) result {
	t.Helper()
	job := resolveJob(t, doc, name)
	lines := append(yamlList(t, job["before_script"]), yamlList(t, job["script"])...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-eo", "pipefail", "-c", strings.Join(lines, "\n"))
	cmd.Dir, cmd.Env = dir, ciJobEnv(doc, job, base)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s: %v", name, err)
	}
	r := result{code: cmd.ProcessState.ExitCode(), stdout: out.String(), stderr: errb.String()}
	t.Logf("CI job %s → exit %d\n--- stdout\n%s--- stderr\n%s", name, r.code, r.stdout, r.stderr)
	return r
}

// testTemplateScripts runs the template's deploy and plan jobs for real,
// with the variables a GitLab job would have.
func testTemplateScripts(t *testing.T, dc *deployCluster) {
	doc := loadYAML(t, filepath.Join(testcluster.RepoRoot(), ciTemplate))
	dir := t.TempDir()
	// A job file written for the dissertation's pipeline: the commit comes
	// from the environment, the namespace from the template's --var.
	writeJobFile(t, dir, "job.nomad.hcl", strings.Replace(webJob("namespace = var.namespace", goodScript), `job "web"`, `job "shop"`, 1))
	ca := writeJobFile(t, dir, "nomad-ca.pem", testCAPEM(t))
	base := func(env, sha string) []string {
		e := dc.env(t,
			"NOMAD_CACERT="+ca, // a GitLab file variable: a path
			"CI_PROJECT_DIR="+dir,
			"CI_REGISTRY_IMAGE=registry.example/shop",
			"CI_COMMIT_SHORT_SHA="+sha,
			"CI_ENVIRONMENT_NAME="+env,
		)
		for i, kv := range e {
			if p, ok := strings.CutPrefix(kv, "PATH="); ok {
				e[i] = "PATH=" + filepath.Dir(bin) + string(os.PathListSeparator) + p
			}
		}
		return e
	}

	r := runCIJob(t, doc, "plan:dev", dir, base("dev", "1111111"))
	wantExit(t, r, exitChanges) // a new job: changes; allowed by the job
	r = runCIJob(t, doc, "deploy:dev", dir, base("dev", "1111111"))
	wantExit(t, r, exitOK)
	wantOutput(t, r, "bootstrap ", `job "shop" in namespace "dev"`, "healthy")
	j := dc.job(t, "dev", "shop")
	if j.Meta["commit"] != "1111111" || !*j.Stable {
		t.Errorf("shop in dev: meta %v stable %v", j.Meta, *j.Stable)
	}
	r = runCIJob(t, doc, "plan:dev", dir, base("dev", "1111111"))
	wantExit(t, r, exitOK)
	wantOutput(t, r, "plan: no changes")
	r = runCIJob(t, doc, "plan:dev", dir, base("dev", "2222222"))
	wantExit(t, r, exitChanges)
	wantOutput(t, r, `+/- Meta[commit]: "1111111" => "2222222"`)

	r = runCIJob(t, doc, "deploy:prod", dir, base("prod", "1111111"))
	wantExit(t, r, exitOK)
	if j := dc.job(t, "prod", "shop"); j.Meta["commit"] != "1111111" {
		t.Errorf("shop in prod: meta %v", j.Meta)
	}

	// The example's job passes the guard rails (tagged image, prometheus
	// tag) and plans; it needs Docker and Consul, which are not here, so
	// it is planned, not deployed.
	ex := filepath.Join(testcluster.RepoRoot(), "ci", "gitlab", "example")
	r = runDeploy(t, ex, base("prod", "3333333"), "web.nomad.hcl", "--namespace", "prod", "--var", "namespace=prod", "--plan-only")
	wantExit(t, r, exitChanges)
	wantOutput(t, r, "substituted from the environment: CI_COMMIT_SHORT_SHA, CI_REGISTRY_IMAGE", `+ Job: "web"`)
	if strings.Contains(r.stdout, "warning: service") {
		t.Error("the example's service was warned about")
	}
}

// testCAPEM returns a self-signed CA certificate, what NOMAD_CACERT holds.
func testCAPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test Nomad CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// syncBuffer is a bytes.Buffer a running process writes to while the test
// reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
