package platform_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
	"github.com/platform-bootstrap/bootstrap/stages/nomad"
	"github.com/platform-bootstrap/bootstrap/stages/platform"
)

// TestPlatform is `make up` on the local provider end to end: every stage
// with the defaults, a first up killed in the jobs stage and finished by the
// next, verify green, the URLs it prints answer, a second up changes
// nothing, applications deploy into dev and prod with their CI tokens over
// TLS, the web UIs render, attacks with those tokens are refused, the
// platform survives a lost server and a reboot, backup and restore bring it
// back, and down leaves no process and no file behind. Day 2 (upgrades,
// rotations, scaling) is TestPlatformDay2's journey, on its own platform
// after this one: two platforms brought up at once each took three times
// as long.
func TestPlatform(t *testing.T) {
	needPlatformJobs(t)
	p := platformtest.New(t, "", "")
	// The first up is killed in the jobs stage, right after it registered
	// the first job and before that job was healthy; the next up finishes
	// the stage.
	if r := p.Run([]string{"up", "--auto-approve"}, "BOOTSTRAP_CRASHPOINT=jobs:after-register"); r.Code == 0 {
		t.Fatalf("the crash point jobs:after-register did not fire:\n%s", r.Output())
	}
	if r := p.Run([]string{"plan", "--only", "jobs"}); r.Code != 4 {
		t.Errorf("plan of the jobs stage after the kill: exit %d, want 4\n%s", r.Code, r.Output())
	}
	r := p.Up()
	if !strings.Contains(r.Stdout, fmt.Sprintf("%-9s  changed", "jobs")) {
		t.Errorf("the up after the kill did not finish the jobs stage:\n%s", r.Stdout)
	}
	for _, st := range platform.Names() {
		if !strings.Contains(r.Stdout, st) {
			t.Errorf("the summary does not list stage %s", st)
		}
	}
	env := p.Env("admin")
	for _, k := range []string{"VAULT_ADDR", "CONSUL_HTTP_ADDR", "NOMAD_ADDR", "PROMETHEUS_ADDR", "ALERTMANAGER_ADDR", "GRAFANA_ADDR", "FABIO_ADDR"} {
		if env[k] == "" {
			t.Errorf("bootstrap env does not export %s", k)
		} else if !strings.Contains(r.Stdout, env[k]) {
			t.Errorf("up does not print %s (%s)", k, env[k])
		}
	}

	t.Run("the printed URLs answer", func(t *testing.T) {
		hc := &http.Client{Timeout: 10 * time.Second}
		for _, u := range []string{env["PROMETHEUS_ADDR"] + "/-/ready", env["ALERTMANAGER_ADDR"] + "/-/ready", env["GRAFANA_ADDR"] + "/api/health", env["FABIO_ADDR"] + "/prometheus/-/healthy"} {
			resp, err := hc.Get(u)
			if err != nil {
				t.Errorf("%s: %v", u, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("%s: %s", u, resp.Status)
			}
		}
	})

	t.Run("every service discovered once", func(t *testing.T) {
		// Prometheus asks every Consul server for the services tagged
		// prometheus; what several of them return is still one target.
		seen := map[string]int{}
		for _, tg := range activeTargets(t, env["PROMETHEUS_ADDR"]) {
			if tg.Labels["job"] == "consul_sd_metrics" {
				seen[tg.ScrapeURL]++
			}
		}
		// node-exporter on each client, prometheus, alertmanager, grafana,
		// fabio's metrics on each client.
		if len(seen) < 7 {
			t.Errorf("%d services discovered, want at least 7: %v", len(seen), seen)
		}
		for u, n := range seen {
			if n != 1 {
				t.Errorf("%s is scraped %d times", u, n)
			}
		}
	})

	t.Run("every node is monitored, servers too", func(t *testing.T) {
		// The clients' node-exporter is a Nomad system job, discovered
		// through Consul; the servers run it as a service of the nomad
		// stage. Each is scraped on its node's address, labelled with its
		// node, and has node metrics in Prometheus.
		nodes := map[string]string{}
		for _, tg := range activeTargets(t, env["PROMETHEUS_ADDR"]) {
			if tg.Labels["service"] != "node-exporter" {
				continue
			}
			if tg.Health != "up" {
				t.Errorf("node-exporter of %s (%s) is %s", tg.Labels["node"], tg.ScrapeURL, tg.Health)
			}
			nodes[tg.Labels["node"]] = tg.Labels["instance"]
		}
		for i, n := range []string{"server-1", "server-2", "server-3", "client-1", "client-2"} {
			if want := p.Subnet.IP(i+1) + ":9100"; nodes[n] != want {
				t.Errorf("node-exporter of %s scraped at %q, want %s (all: %v)", n, nodes[n], want, nodes)
			}
		}
		var q struct {
			Data struct {
				Result []struct{ Metric map[string]string } `json:"result"`
			} `json:"data"`
		}
		resp, err := http.Get(env["PROMETHEUS_ADDR"] + "/api/v1/query?query=" + url.QueryEscape(`count by (node) (node_cpu_seconds_total)`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&q); err != nil {
			t.Fatal(err)
		}
		if len(q.Data.Result) != len(nodes) || len(nodes) != 5 {
			t.Errorf("node CPU metrics for %d node(s), want 5: %v", len(q.Data.Result), q.Data.Result)
		}
	})

	t.Run("second up changes nothing", func(t *testing.T) {
		p := p.T(t)
		r := p.Up()
		if strings.Contains(r.Stdout, " changed ") {
			t.Errorf("a stage changed on the second up:\n%s", r.Stdout)
		}
		if r := p.Run([]string{"plan"}); r.Code != 0 {
			t.Errorf("plan after up: exit %d\n%s", r.Code, r.Output())
		}
	})

	t.Run("grafana's password comes from vault", func(t *testing.T) {
		pw, err := os.ReadFile(filepath.Join(p.StateDir(), "secrets", "grafana", "admin-password"))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nomad.NewClient(env["NOMAD_ADDR"], env["NOMAD_CACERT"], env["NOMAD_TOKEN"])
		if err != nil {
			t.Fatal(err)
		}
		job, _, err := nc.Jobs().Info("grafana", &nomadapi.QueryOptions{Namespace: "general"})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(job)
		if strings.Contains(string(b), string(pw)) {
			t.Error("grafana's admin password is in the job")
		}
		req, _ := http.NewRequest(http.MethodGet, env["GRAFANA_ADDR"]+"/api/user", nil)
		req.SetBasicAuth("admin", string(pw))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("grafana login with the password from vault: %s", resp.Status)
		}
	})

	t.Run("deploy into dev and prod with their own CI tokens", func(t *testing.T) {
		for _, ns := range []string{"dev", "prod"} {
			deployWeb(t, p, env, ns)
		}
	})

	t.Run("the web UIs render in a browser", func(t *testing.T) {
		webUIs(t, p.T(t), "web")
	})

	t.Run("attacks with an application token are refused", func(t *testing.T) {
		attacks(t, p.T(t))
	})

	t.Run("with server-1 down, workloads still log in to vault and new services are discovered", func(t *testing.T) {
		p := p.T(t)
		// Vault's JWKS URLs and Prometheus's Consul servers listed server-1
		// first: nothing may depend on it alone.
		for _, svc := range []string{"nomad", "consul"} {
			pid, err := proc.ReadPidFile(filepath.Join(p.StateDir(), "nodes", "server-1", "run", svc+".pid"))
			if err != nil {
				t.Fatal(err)
			}
			if err := proc.Kill(context.Background(), pid); err != nil {
				t.Fatal(err)
			}
		}
		nc, err := nomad.NewClient("https://"+p.Subnet.IP(2)+":4646", env["NOMAD_CACERT"], env["NOMAD_TOKEN"])
		if err != nil {
			t.Fatal(err)
		}
		general := &nomadapi.QueryOptions{Namespace: "general"}
		waitFor := func(what string, f func() error) {
			t.Helper()
			eventually(t, 2*time.Minute, what, f)
		}
		runningAllocs := func(job string, q *nomadapi.QueryOptions) ([]string, error) {
			allocs, _, err := nc.Jobs().Allocations(job, false, q)
			var ids []string
			for _, a := range allocs {
				if a.ClientStatus == nomadapi.AllocClientStatusRunning {
					ids = append(ids, a.ID)
				}
			}
			return ids, err
		}
		var old []string
		waitFor("grafana's allocation through server-2", func() (err error) {
			old, err = runningAllocs("grafana", general)
			if err == nil && len(old) != 1 {
				err = fmt.Errorf("%d running grafana allocations", len(old))
			}
			return err
		})
		// A replacement allocation logs in to Vault with a fresh workload
		// identity before its template renders the admin password.
		if _, err := nc.Allocations().Stop(&nomadapi.Allocation{ID: old[0], Namespace: "general"}, nil); err != nil {
			t.Fatal(err)
		}
		waitFor("a new grafana allocation running", func() error {
			ids, err := runningAllocs("grafana", general)
			if err != nil {
				return err
			}
			if len(ids) != 1 || ids[0] == old[0] {
				return fmt.Errorf("running grafana allocations: %v", ids)
			}
			return nil
		})

		probe := nomadapi.NewServiceJob("discovery-probe", "discovery-probe", "global", 50)
		dev := "dev"
		probe.Namespace = &dev
		probe.Datacenters = []string{"*"}
		tg := nomadapi.NewTaskGroup("probe", 1)
		tg.Networks = []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: "http"}}}}
		tg.Services = []*nomadapi.Service{{Name: "dev-discovery-probe", PortLabel: "http", Address: "${meta.node_address}", Tags: []string{"prometheus"}, Provider: "consul"}}
		task := nomadapi.NewTask("probe", "exec").SetConfig("command", "/bin/sleep").SetConfig("args", []string{"600"})
		cpu, mem := 20, 16
		task.Require(&nomadapi.Resources{CPU: &cpu, MemoryMB: &mem})
		tg.AddTask(task)
		probe.AddTaskGroup(tg)
		if _, _, err := nc.Jobs().Register(probe, &nomadapi.WriteOptions{Namespace: "dev"}); err != nil {
			t.Fatal(err)
		}
		defer nc.Jobs().Deregister("discovery-probe", true, &nomadapi.WriteOptions{Namespace: "dev"})
		waitFor("prometheus discovering discovery-probe", func() error {
			resp, err := http.Get(env["PROMETHEUS_ADDR"] + "/api/v1/targets?state=active")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if !strings.Contains(string(b), `"service":"dev-discovery-probe"`) {
				return errors.New("not a target yet")
			}
			return nil
		})

		// up restarts server-1; its JWKS and catalog serve again.
		r := p.Up()
		if !strings.Contains(r.Stdout, "server-1") {
			t.Errorf("up did not restart server-1:\n%s", r.Stdout)
		}
	})

	t.Run("after a reboot up brings everything back", func(t *testing.T) {
		p := p.T(t)
		// A laptop reboot, for the local provider: every process dies at
		// once, pid files stay behind, Vault comes back sealed.
		pids, err := proc.Under(p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, pid := range pids {
			if err := proc.Kill(context.Background(), pid); err != nil {
				t.Fatal(err)
			}
		}
		if r := p.Run([]string{"plan"}); r.Code != 4 {
			t.Errorf("plan after the reboot: exit %d, want 4\n%s", r.Code, r.Output())
		}
		p.Up()
		// The application deployed before the reboot runs and is routed again.
		eventually(t, 2*time.Minute, "the dev application back after the reboot", func() error { return get200(env["FABIO_DEV_ADDR"] + "/web/") })
		if r := p.Run([]string{"plan"}); r.Code != 0 {
			t.Errorf("plan after up: exit %d\n%s", r.Code, r.Output())
		}
	})

	t.Run("a new nomad signing key reaches consul through up", func(t *testing.T) {
		p := p.T(t)
		nc, err := nomad.NewClient(env["NOMAD_ADDR"], env["NOMAD_CACERT"], env["NOMAD_TOKEN"])
		if err != nil {
			t.Fatal(err)
		}
		// What Nomad's periodic rotation does half way through the period:
		// the next key is published before anything is signed with it.
		key, _, err := nc.Keyring().Rotate(&nomadapi.KeyringRotateOptions{PublishTime: time.Now().Add(time.Hour).UnixNano()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := p.Run([]string{"status"}); !strings.Contains(r.Stdout, "does not trust key "+key.KeyID) {
			t.Errorf("status does not warn that consul lacks key %s:\n%s", key.KeyID, r.Output())
		}
		if r := p.Run([]string{"plan", "--only", "nomad"}); r.Code != 4 || !strings.Contains(r.Stdout, key.KeyID) {
			t.Errorf("plan --only nomad: exit %d, want 4 and key %s\n%s", r.Code, key.KeyID, r.Output())
		}
		p.Up()
		if r := p.Run([]string{"status"}); !strings.Contains(r.Stdout, "consul trusts all") {
			t.Errorf("status after up:\n%s", r.Output())
		}
	})

	t.Run("status", func(t *testing.T) {
		r := p.Run([]string{"status"})
		if r.Code != 0 || strings.Contains(r.Stdout, "!!") {
			t.Errorf("status: exit %d\n%s", r.Code, r.Output())
		}
		for _, job := range []string{"fabio", "grafana", "node-exporter", "prometheus"} {
			if !regexp.MustCompile(`ok job +` + job + ` +healthy`).MatchString(r.Stdout) {
				t.Errorf("status does not show job %s healthy:\n%s", job, r.Stdout)
			}
		}
	})

	t.Run("backup, down and restore bring the platform back", func(t *testing.T) {
		backupRestore(t, p.T(t))
	})

	p.AssertNoSecrets()

	t.Run("down leaves nothing", func(t *testing.T) {
		r := p.Run([]string{"down", "--auto-approve"})
		if r.Code != 0 {
			t.Fatalf("down: exit %d\n%s", r.Code, r.Output())
		}
		if pids, _ := proc.Under(p.Dir); len(pids) > 0 {
			t.Errorf("processes left after down: %v", pids)
		}
		entries, _ := os.ReadDir(p.StateDir())
		for _, e := range entries {
			switch e.Name() {
			case "logs", "runs", "lock":
			default:
				t.Errorf("%s left in the state directory after down", e.Name())
			}
		}
	})
}

// eventually calls f every second until it returns nil, and fails the test
// with f's last error when timeout passes first.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	if err := poll.Retry(context.Background(), timeout, time.Second, f, func(error) bool { return false }); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// get200 is nil when url answers 200 OK.
func get200(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// webJob is an application of namespace ns: count busybox web servers
// serving index (a template), registered in Consul as <ns>-<name> with
// tags, on distinct clients. exec: the isolating driver application
// namespaces may use without Docker; busybox is static, so the chroot
// needs nothing more.
func webJob(ns, name string, count int, tags, index string) string {
	return fmt.Sprintf(`job %[2]q {
  namespace   = %[1]q
  datacenters = ["*"]
  constraint {
    operator = "distinct_hosts"
    value    = "true"
  }
  group "web" {
    count = %[3]d
    network {
      port "http" {}
    }
    service {
      name     = "%[1]s-%[2]s"
      port     = "http"
      address  = "${meta.node_address}"
      provider = "consul"
      tags     = [%[4]s]
      check {
        type     = "http"
        path     = "/"
        interval = "5s"
        timeout  = "2s"
      }
    }
    task "web" {
      driver = "exec"
      config {
        command = "/bin/busybox"
        args    = ["httpd", "-f", "-p", "${meta.node_address}:${NOMAD_PORT_http}", "-h", "${NOMAD_TASK_DIR}"]
      }
      template {
        data        = %[5]q
        destination = "local/index.html"
      }
      resources {
        cpu    = 50
        memory = 64
      }
    }
  }
}
`, ns, name, count, tags, index)
}

// needPlatformJobs fails (or skips, without BOOTSTRAP_REQUIRE_TOOLS) a test
// whose platform runs the platform jobs when make tools did not build them.
func needPlatformJobs(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("brings up a platform")
	}
	for _, b := range []string{"prometheus", "alertmanager", "prometheus-node-exporter", "fabio", "grafana"} {
		if _, err := os.Stat(filepath.Join(platformtest.BinDir(), b)); err != nil && os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
			t.Fatalf("bin/%s is missing: run make tools", b)
		} else if err != nil {
			t.Skipf("bin/%s is missing: run make tools", b)
		}
	}
}

// deployWeb deploys ns's web application with bootstrap deploy and ns's CI
// token over TLS, and waits until ns's own Fabio routes it at /web/; the
// platform's Fabio must not.
func deployWeb(t *testing.T, p *platformtest.Platform, env map[string]string, ns string) {
	t.Helper()
	ci := p.Env("ci-" + ns)
	job := filepath.Join(t.TempDir(), "web.nomad.hcl")
	if err := os.WriteFile(job, []byte(webJob(ns, "web", 1, `"prometheus", "urlprefix-/web strip=/web"`, "ok ${CI_COMMIT_SHORT_SHA}")), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p.Bin, "deploy", job, "--timeout", "3m")
	cmd.Env = append(os.Environ(), "NOMAD_ADDR="+ci["NOMAD_ADDR"], "NOMAD_CACERT="+ci["NOMAD_CACERT"], "NOMAD_TOKEN="+ci["NOMAD_TOKEN"], "CI_COMMIT_SHORT_SHA=abc1234", "CI=true")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy into %s with its CI token over TLS: %v\n%s", ns, err, out)
	}
	fabio := env["FABIO_"+strings.ToUpper(ns)+"_ADDR"]
	eventually(t, time.Minute, ns+"'s fabio routing /web", func() error { return get200(fabio + "/web/") })
	if err := get200(env["FABIO_ADDR"] + "/web/"); err == nil {
		t.Errorf("the platform's Fabio routes %s's application", ns)
	}
}
