package platform_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/stages/consul"
	"github.com/platform-bootstrap/bootstrap/stages/nomad"
)

// attacks tries, with nothing but an application namespace's deploy token,
// every way out of that namespace the servers must refuse. Each attack is
// made against the API directly, as an attacker would, never through
// bootstrap deploy; each asserts that the attack did not succeed (nothing
// registered, nothing read), not only that an error came back.
func attacks(t *testing.T, p *platformtest.Platform) {
	admin := p.Env("admin")
	client := func(token string) *nomadapi.Client {
		c, err := nomad.NewClient(admin["NOMAD_ADDR"], admin["NOMAD_CACERT"], token)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	mgmt := client(admin["NOMAD_TOKEN"])
	tokens := map[string]string{"dev": p.Env("ci-dev")["NOMAD_TOKEN"], "prod": p.Env("ci-prod")["NOMAD_TOKEN"]}
	if tokens["dev"] == "" || tokens["prod"] == "" || tokens["dev"] == tokens["prod"] {
		t.Fatalf("want a deploy token of its own for dev and for prod")
	}

	// refused registers job with the attacker's token and requires that
	// Nomad refused it and that no such job exists afterwards.
	refused := func(t *testing.T, ci *nomadapi.Client, job *nomadapi.Job, why string) {
		t.Helper()
		_, _, err := ci.Jobs().Register(job, nil)
		if err == nil {
			mgmt.Jobs().Deregister(*job.ID, true, &nomadapi.WriteOptions{Namespace: *job.Namespace})
			t.Fatalf("%s: the job was accepted", why)
		}
		t.Logf("%s: refused: %v", why, err)
		if j, _, err := mgmt.Jobs().Info(*job.ID, &nomadapi.QueryOptions{Namespace: *job.Namespace}); err == nil && j != nil {
			t.Errorf("%s: refused, yet job %s/%s exists", why, *job.Namespace, *job.ID)
		}
	}

	for ns, other := range map[string]string{"dev": "prod", "prod": "dev"} {
		ci := client(tokens[ns])
		t.Run(ns+": raw_exec is refused", func(t *testing.T) {
			job := attackJob("attack-raw-exec", ns, "raw_exec", "id")
			refused(t, ci, job, "raw_exec in "+ns)
		})
		t.Run(ns+": a platform host volume is refused", func(t *testing.T) {
			job := attackJob("attack-volume", ns, "exec", "ls /data")
			job.TaskGroups[0].Volumes = map[string]*nomadapi.VolumeRequest{"data": {Name: "data", Type: "host", Source: "prometheus-data"}}
			job.TaskGroups[0].Tasks[0].VolumeMounts = []*nomadapi.VolumeMount{{Volume: ptr("data"), Destination: ptr("/data")}}
			refused(t, ci, job, "host volume prometheus-data in "+ns)
		})
		t.Run(ns+": docker bind mounts of / and the engine's socket are refused", func(t *testing.T) {
			// The clients' Docker plugin disables volumes (see the nomad
			// role), so an engine refuses the mounts when the task starts.
			if !dockerOnClients(t, mgmt) {
				t.Skip("no client runs a Docker engine here, so no Docker task can start at all; the machine lab runs this attack where one does")
			}
			job := attackJob("attack-docker", ns, "docker", "")
			job.TaskGroups[0].Tasks[0].Config = map[string]any{"image": "debian:12", "volumes": []string{"/:/host", "/var/run/docker.sock:/var/run/docker.sock"}}
			if _, _, err := ci.Jobs().Register(job, nil); err != nil {
				t.Logf("refused at submit: %v", err)
				return
			}
			defer mgmt.Jobs().Deregister(*job.ID, true, &nomadapi.WriteOptions{Namespace: ns})
			if running := waitAllocRunning(mgmt, *job.ID, ns, 30*time.Second); running {
				t.Fatalf("a Docker task with bind mounts of / and the socket runs in %s", ns)
			}
		})
		for _, target := range []string{"general", "default", other} {
			t.Run(ns+": a job in "+target+" is refused", func(t *testing.T) {
				refused(t, ci, attackJob("attack-elsewhere", target, "exec", "id"), "a job in "+target+" with "+ns+"'s token")
			})
		}
		t.Run(ns+": general's jobs, variables and allocations are not readable", func(t *testing.T) {
			q := &nomadapi.QueryOptions{Namespace: "general"}
			if jobs, _, err := ci.Jobs().List(q); err == nil && len(jobs) > 0 {
				t.Errorf("%s's token lists %d jobs in general", ns, len(jobs))
			}
			if _, _, err := ci.Jobs().Info("grafana", q); err == nil {
				t.Errorf("%s's token reads general's grafana job", ns)
			}
			if vars, _, err := ci.Variables().List(q); err == nil && len(vars) > 0 {
				t.Errorf("%s's token lists general's variables", ns)
			}
			if _, _, err := ci.Variables().Read("nomad/jobs/grafana", q); err == nil {
				t.Errorf("%s's token reads a variable of general", ns)
			}
			allocs, _, err := mgmt.Jobs().Allocations("grafana", false, q)
			if err != nil || len(allocs) == 0 {
				t.Fatalf("grafana's allocations: %v", err)
			}
			a, _, err := mgmt.Allocations().Info(allocs[0].ID, q)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := ci.AllocFS().List(a, "/", q); err == nil {
				t.Errorf("%s's token lists the files of general's grafana allocation", ns)
			}
			if _, _, err := ci.Allocations().Info(a.ID, q); err == nil {
				t.Errorf("%s's token reads general's grafana allocation", ns)
			}
		})
	}

	t.Run("a platform service name is refused by Consul", func(t *testing.T) {
		nameAttack(t, p, client(tokens["dev"]), mgmt)
	})
	t.Run("routes and scrape targets stay in their namespace", func(t *testing.T) {
		routeAttack(t, p, client(tokens["dev"]), mgmt)
	})

	t.Run("a template cannot read the platform's files", func(t *testing.T) {
		templateAttack(t, p, client(tokens["dev"]), mgmt)
	})

	// An exec task in dev is the attacker's code running on a client: it
	// must not see the platform's files, other allocations or the host's
	// processes, and must not run as root.
	t.Run("an exec task sees nothing of the platform", func(t *testing.T) {
		ci := client(tokens["dev"])
		state := p.StateDir()
		init := filepath.Join(state, "secrets", "vault", "init.json")
		script := strings.Join([]string{
			"echo uid=$(id -u)",
			"cat " + init + " && echo READ-INIT",
			"ls " + filepath.Join(state, "nodes") + " && echo LISTED-NODES",
			"cat /proc/1/root" + init + " && echo READ-VIA-PROC",
			"ls /proc | grep -c '^[0-9]' | sed 's/^/pids=/'",
			"echo done",
		}, "; ")
		job := attackJob("attack-files", "dev", "exec", script)
		job.Type = ptr("batch")
		if _, _, err := ci.Jobs().Register(job, nil); err != nil {
			t.Fatalf("an exec batch job in dev is the application namespace's normal use: %v", err)
		}
		defer mgmt.Jobs().Deregister(*job.ID, true, &nomadapi.WriteOptions{Namespace: "dev"})
		var out string
		eventually(t, 2*time.Minute, "the attack task's output", func() error {
			allocs, _, err := ci.Jobs().Allocations(*job.ID, true, &nomadapi.QueryOptions{Namespace: "dev"})
			if err != nil {
				return err
			}
			for _, a := range allocs {
				if a.ClientStatus != "complete" && a.ClientStatus != "failed" {
					continue
				}
				full, _, err := ci.Allocations().Info(a.ID, &nomadapi.QueryOptions{Namespace: "dev"})
				if err != nil {
					return err
				}
				r, err := ci.AllocFS().Cat(full, "alloc/logs/t.stdout.0", &nomadapi.QueryOptions{Namespace: "dev"})
				if err != nil {
					return err
				}
				b, err := io.ReadAll(r)
				r.Close()
				if err != nil {
					return err
				}
				out = string(b)
				if !strings.Contains(out, "done") {
					return fmt.Errorf("task %s: output so far %q", a.ClientStatus, out)
				}
				return nil
			}
			return fmt.Errorf("no finished allocation yet")
		})
		t.Logf("the exec task printed:\n%s", out)
		for _, bad := range []string{"READ-INIT", "LISTED-NODES", "READ-VIA-PROC", "uid=0\n"} {
			if strings.Contains(out, bad) {
				t.Errorf("the exec task in dev got %s", strings.TrimSpace(bad))
			}
		}
		if !strings.Contains(out, "uid=") {
			t.Errorf("the task did not run its script: %q", out)
		}
		p.AssertNoSecrets(out)
	})
}

// nameAttack registers, from dev, a service named like the platform's
// Grafana. Nomad accepts the job (it knows nothing of Consul's names), but
// its allocation cannot log in to Consul for that name, so nothing is ever
// registered under it.
func nameAttack(t *testing.T, p *platformtest.Platform, ci, mgmt *nomadapi.Client) {
	job := attackJob("attack-name", "dev", "exec", "sleep 600")
	job.TaskGroups[0].Networks = []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: "http"}}}}
	job.TaskGroups[0].Services = []*nomadapi.Service{{Name: "grafana", PortLabel: "http", Address: "${meta.node_address}", Provider: "consul", Tags: []string{"urlprefix-/grafana"}}}
	if _, _, err := ci.Jobs().Register(job, nil); err != nil {
		t.Logf("refused at submit: %v", err)
		return
	}
	defer mgmt.Jobs().Deregister(*job.ID, true, &nomadapi.WriteOptions{Namespace: "dev"})
	q := &nomadapi.QueryOptions{Namespace: "dev"}
	var allocs []*nomadapi.AllocationListStub
	eventually(t, 2*time.Minute, "the name attack's allocation to fail", func() error {
		var err error
		allocs, _, err = mgmt.Jobs().Allocations(*job.ID, true, q)
		if err != nil {
			return err
		}
		for _, a := range allocs {
			switch a.ClientStatus {
			case "failed":
				return nil
			case "running":
				return nil // checked below: its service must not be in Consul
			}
		}
		return fmt.Errorf("no settled allocation yet")
	})
	admin := p.Env("admin")
	cc, err := consul.NewClient(strings.TrimPrefix(admin["CONSUL_HTTP_ADDR"], "https://"), admin["CONSUL_CACERT"], admin["CONSUL_HTTP_TOKEN"])
	if err != nil {
		t.Fatal(err)
	}
	instances, _, err := cc.Catalog().Service("grafana", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range instances {
		for _, a := range allocs {
			if strings.Contains(in.ServiceID, a.ID) {
				t.Errorf("dev's job registered the Consul service grafana (%s)", in.ServiceID)
			}
		}
	}
	for _, a := range allocs {
		if a.ClientStatus == "running" {
			t.Errorf("the allocation with a service named grafana runs in dev")
		}
	}
}

// routeAttack runs, in dev, a web server that claims the platform's
// /grafana route and prod's /web, and a service that points Prometheus at
// an address that is not its node's. Each claim stays inside dev: the
// platform's and prod's Fabio never route to it, and Prometheus drops the
// foreign target.
func routeAttack(t *testing.T, p *platformtest.Platform, ci, mgmt *nomadapi.Client) {
	env := p.Env("admin")
	job := attackJob("attack-routes", "dev", "exec", "")
	tg := job.TaskGroups[0]
	tg.RestartPolicy = nil
	tg.ReschedulePolicy = nil
	tg.Networks = []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: "http"}}}}
	tg.Services = []*nomadapi.Service{
		{Name: "dev-evil", PortLabel: "http", Address: "${meta.node_address}", Provider: "consul",
			Tags:   []string{"urlprefix-/grafana", "urlprefix-/web", "urlprefix-/evil"},
			Checks: []nomadapi.ServiceCheck{{Type: "http", Path: "/", Interval: 2 * time.Second, Timeout: time.Second}}},
		{Name: "dev-foreign-target", PortLabel: "http", Address: "127.0.0.1", Provider: "consul", Tags: []string{"prometheus"}},
	}
	task := tg.Tasks[0]
	task.SetConfig("command", "/bin/busybox").SetConfig("args", []string{"httpd", "-f", "-p", "${meta.node_address}:${NOMAD_PORT_http}", "-h", "${NOMAD_TASK_DIR}"})
	task.Templates = []*nomadapi.Template{{EmbeddedTmpl: ptr("EVIL"), DestPath: ptr("local/index.html")}}
	for _, d := range []string{"grafana", "web", "evil"} {
		task.Templates = append(task.Templates, &nomadapi.Template{EmbeddedTmpl: ptr("EVIL"), DestPath: ptr("local/" + d + "/index.html")})
	}
	if _, _, err := ci.Jobs().Register(job, nil); err != nil {
		t.Fatalf("a dev-… service is dev's normal use: %v", err)
	}
	defer mgmt.Jobs().Deregister(*job.ID, true, &nomadapi.WriteOptions{Namespace: "dev"})
	// dev's own Fabio routes the claims: the registration happened.
	eventually(t, 2*time.Minute, "dev's fabio routing /evil", func() error { return get200(env["FABIO_DEV_ADDR"] + "/evil/") })
	body := func(url string) string {
		resp, err := http.Get(url)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// Fabio balances a route over every instance, so ask several times.
	for i := 0; i < 10; i++ {
		if b := body(env["FABIO_ADDR"] + "/grafana/"); strings.Contains(b, "EVIL") {
			t.Fatalf("the platform's /grafana served dev's page")
		}
		if b := body(env["FABIO_PROD_ADDR"] + "/web/"); strings.Contains(b, "EVIL") {
			t.Fatalf("prod's /web served dev's page")
		}
	}
	if err := get200(env["FABIO_ADDR"] + "/evil/"); err == nil {
		t.Errorf("the platform's Fabio routes a dev service")
	}
	eventually(t, time.Minute, "prometheus to drop the foreign target", func() error {
		resp, err := http.Get(env["PROMETHEUS_ADDR"] + "/api/v1/targets?state=any")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Active  []struct{ Labels map[string]string } `json:"activeTargets"`
				Dropped []struct {
					Labels map[string]string `json:"discoveredLabels"`
				} `json:"droppedTargets"`
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return err
		}
		for _, a := range r.Data.Active {
			if a.Labels["service"] == "dev-foreign-target" {
				return fmt.Errorf("prometheus scrapes dev's service on an address that is not its node's")
			}
		}
		for _, d := range r.Data.Dropped {
			if d.Labels["__meta_consul_service"] == "dev-foreign-target" {
				return nil
			}
		}
		return fmt.Errorf("prometheus has not discovered dev-foreign-target yet")
	})
}

// templateAttack asks Nomad to render a platform file into a dev task
// through a template's source: the client's template sandbox must refuse.
func templateAttack(t *testing.T, p *platformtest.Platform, ci, mgmt *nomadapi.Client) {
	init := filepath.Join(p.StateDir(), "secrets", "vault", "init.json")
	job := attackJob("attack-template", "dev", "exec", "sleep 600")
	job.TaskGroups[0].Tasks[0].Templates = []*nomadapi.Template{{SourcePath: ptr(init), DestPath: ptr("local/stolen")}}
	if _, _, err := ci.Jobs().Register(job, nil); err != nil {
		t.Logf("refused at submit: %v", err)
		return
	}
	defer mgmt.Jobs().Deregister(*job.ID, true, &nomadapi.WriteOptions{Namespace: "dev"})
	q := &nomadapi.QueryOptions{Namespace: "dev"}
	var status string
	eventually(t, 2*time.Minute, "the template attack's allocation to settle", func() error {
		allocs, _, err := mgmt.Jobs().Allocations(*job.ID, true, q)
		if err != nil {
			return err
		}
		for _, a := range allocs {
			if a.ClientStatus == "running" || a.ClientStatus == "failed" {
				status = a.ClientStatus
				if status == "running" {
					full, _, err := ci.Allocations().Info(a.ID, q)
					if err != nil {
						return err
					}
					if r, err := ci.AllocFS().Cat(full, "t/local/stolen", q); err == nil {
						b, _ := io.ReadAll(r)
						r.Close()
						t.Errorf("the platform's init.json was rendered into a dev task (%d bytes)", len(b))
						p.AssertNoSecrets(string(b))
					}
				}
				return nil
			}
		}
		return fmt.Errorf("no settled allocation yet")
	})
	if status != "failed" {
		t.Errorf("the allocation whose template reads a platform file is %s, want failed", status)
	}
}

// attackJob is a one-task job running script with /bin/sh under driver.
func attackJob(id, ns, driver, script string) *nomadapi.Job {
	job := nomadapi.NewServiceJob(id, id, "global", 50)
	job.Namespace = &ns
	job.Datacenters = []string{"*"}
	tg := nomadapi.NewTaskGroup("g", 1)
	tg.RestartPolicy = &nomadapi.RestartPolicy{Attempts: ptr(0), Mode: ptr("fail")}
	tg.ReschedulePolicy = &nomadapi.ReschedulePolicy{Attempts: ptr(0), Unlimited: ptr(false)}
	task := nomadapi.NewTask("t", driver)
	if script != "" {
		task.SetConfig("command", "/bin/sh").SetConfig("args", []string{"-c", script})
	}
	task.Require(&nomadapi.Resources{CPU: ptr(20), MemoryMB: ptr(32)})
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}

// dockerOnClients reports whether any client has a healthy Docker driver.
func dockerOnClients(t *testing.T, c *nomadapi.Client) bool {
	nodes, _, err := c.Nodes().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if d := n.Drivers["docker"]; d != nil && d.Detected && d.Healthy {
			return true
		}
	}
	return false
}

// waitAllocRunning reports whether an allocation of the job runs within d.
func waitAllocRunning(c *nomadapi.Client, id, ns string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		allocs, _, err := c.Jobs().Allocations(id, false, &nomadapi.QueryOptions{Namespace: ns})
		if err == nil {
			for _, a := range allocs {
				if a.ClientStatus == "running" {
					return true
				}
			}
		}
		time.Sleep(time.Second)
	}
	return false
}
