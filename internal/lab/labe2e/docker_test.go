package labe2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/apitls/apitlstest"
	"github.com/platform-bootstrap/bootstrap/internal/imagearchive"
	"github.com/platform-bootstrap/bootstrap/internal/lab"
	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/jobs"
	"github.com/platform-bootstrap/bootstrap/stages/nomad"
	"github.com/platform-bootstrap/bootstrap/tools"
)

// TestLabDocker runs the platform jobs' docker profile on a machine: the
// docker role starts the client's engine (the lab's machines come with
// Debian's docker.io installed and disabled, as a machine image with Docker
// would, since they reach no mirror to install it from), loads the images
// make tools built from the tested binaries, and Nomad runs every platform
// job in containers of those images. down then leaves the machine as it
// was: the engine stopped and disabled again, no container, image or state
// of ours.
func TestLabDocker(t *testing.T) {
	needLab(t)
	archives, err := imagearchive.Dir(filepath.Join(platformtest.BinDir(), "images"))
	if err != nil {
		t.Fatalf("the images of make tools: %v", err)
	}
	labDir := t.TempDir()
	t.Cleanup(func() {
		if err := lab.Down(context.Background(), labDir); err != nil {
			t.Errorf("cleanup: lab down: %v", err)
		}
	})
	p := platformtest.Prepare(t)
	ctx := context.Background()
	binDir := platformtest.BinDir()
	st, err := lab.Up(ctx, lab.Config{Dir: labDir, Name: "ld", Net: 206, Nodes: lab.Nodes(1, 1), BinDir: binDir, Public: true, Owner: os.Getpid(), Log: testLog{t}})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	client := st.Machines[len(st.Machines)-1]
	t.Cleanup(func() {
		if t.Failed() {
			out, err := lab.Exec(context.Background(), client, "journalctl", "--no-pager", "-n", "80", "-u", "docker", "-u", "nomad")
			t.Logf("%s: the end of docker's and nomad's journal (%v):\n%s", client.Name, err, out)
		}
	})
	// Prod's public HTTPS with the user's certificate (the test's CA's),
	// as the docker profile serves it on a cloud.
	ingressCA := apitlstest.NewCA(t, "lab ingress")
	apitlstest.WritePair(t, p.Dir, ingressCA.Issue(t, []string{"app.lab.example"}, client.PublicIP))
	grafana := "grafana/grafana-oss:" + tools.Versions()["GRAFANA_VERSION"]
	p.WriteConfig(fmt.Sprintf(`provider "static" {
  inventory       = %q
  service_manager = "systemd"
  install_method  = "binary"
  bin_dir         = %q
}

jobs {
  driver = "docker"
  # The tested Grafana build is tagged as what it is (tools/images).
  grafana {
    image = %q
  }
}

docker {
  images = %q
  # An engine inside a systemd-nspawn machine: the machine's network is
  # not its own to bridge or filter, and its root is already an overlay.
  daemon = {
    "storage-driver" = "vfs"
    bridge           = "none"
    iptables         = false
    "ip-masq"        = false
  }
}

ingress {
  namespace = "prod"
  tls {
    cert_file = "fullchain.pem"
    key_file  = "privkey.pem"
  }
}
`, st.InventoryFile(), binDir, grafana, filepath.Join(binDir, "images")))
	// The machine's own daemon.json, which the docker block's replaces
	// until down puts it back.
	const ownDaemon = `{"log-level": "warn"}`
	if out, err := lab.Exec(ctx, client, "sh", "-c", "mkdir -p /etc/docker && echo '"+ownDaemon+"' > /etc/docker/daemon.json"); err != nil {
		t.Fatalf("write the machine's daemon.json: %v\n%s", err, out)
	}
	before := snap(t, client)

	start := time.Now()
	r := p.Up()
	t.Logf("bootstrap up: %s\n%s", time.Since(start).Round(time.Second), r.Stdout)

	t.Run("every platform job runs in a container of the tested binaries", func(t *testing.T) {
		out, err := lab.Exec(ctx, client, "docker", "ps", "--format", "{{.Image}} {{.Names}}")
		if err != nil {
			t.Fatalf("docker ps: %v\n%s", err, out)
		}
		var running []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			running = append(running, strings.Fields(line)[0])
		}
		for _, a := range archives {
			if !slices.Contains(running, a.Tags[0]) {
				t.Errorf("no container of %s runs on %s; running: %v", a.Tags[0], client.Name, running)
			}
			id, err := lab.Exec(ctx, client, "docker", "image", "inspect", "--format", "{{.Id}}", a.Tags[0])
			if got := strings.TrimSpace(string(id)); err != nil || got != a.ID {
				t.Errorf("%s in the engine is %q (%v), want the archive's %s", a.Tags[0], got, err, a.ID)
			}
		}
		_, nc := apiClients(t, p.Env("admin"))
		allocs, _, err := nc.Allocations().List(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range allocs {
			if a.ClientStatus != "running" {
				continue
			}
			alloc, _, err := nc.Allocations().Info(a.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, tg := range alloc.Job.TaskGroups {
				for _, task := range tg.Tasks {
					if task.Driver != "docker" {
						t.Errorf("job %s task %s runs on %s, want docker", a.JobID, task.Name, task.Driver)
					}
				}
			}
		}
	})

	// Fabio's containers get the certificate from Vault into their secrets
	// directory, and the redirect's container binds the public port 80.
	t.Run("prod's public HTTPS and the redirect to it run in containers", func(t *testing.T) {
		url := "https://" + client.PublicIP + "/"
		eventually(t, time.Minute, "prod's Fabio answering "+url+" with the user's certificate", func() error {
			out, err := st.OutsideCurl(ctx, "--cacert", ingressCA.File, "-o", "/dev/null", "-w", "%{http_code}", url)
			if err == nil && string(out) != "404" {
				err = fmt.Errorf("status %s, want 404: prod's Fabio, which has no route yet", out)
			}
			return err
		})
		out, err := st.OutsideCurl(ctx, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "http://"+client.PublicIP+"/web/")
		if want := "301 https://" + client.PublicIP + "/web/"; err != nil || string(out) != want {
			t.Errorf("the outside's GET http://%s/web/: %q, %v; want %q", client.PublicIP, out, err, want)
		}
		// verify compares what is served with the file: a renewed
		// certificate not yet deployed is a failing check in plan.
		p := p.T(t)
		files := map[string][]byte{}
		for _, f := range []string{"fullchain.pem", "privkey.pem"} {
			b, err := os.ReadFile(filepath.Join(p.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			files[f] = b
		}
		apitlstest.WritePair(t, p.Dir, ingressCA.Issue(t, []string{"app.lab.example"}, client.PublicIP))
		r := p.Run([]string{"plan"})
		for f, b := range files {
			if err := os.WriteFile(filepath.Join(p.Dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if r.Code != 4 || !strings.Contains(r.Stdout, "serves another certificate than fullchain.pem") {
			t.Errorf("plan with a renewed certificate: exit %d, want verify's check failing\n%s", r.Code, r.Output())
		}
	})

	// The attack stages/platform can only skip (no engine there): dev's CI
	// token asks the engine for the host's root, its socket, or a
	// privileged container. The control runs the same task without them,
	// so the attacks fail for what they ask, not for the image or network.
	t.Run("dev's CI token: docker bind mounts and privileged containers never run", func(t *testing.T) {
		_, mgmt := apiClients(t, p.Env("admin"))
		ci := p.Env("ci-dev")
		dev, err := nomad.NewClient(ci["NOMAD_ADDR"], ci["NOMAD_CACERT"], ci["NOMAD_TOKEN"])
		if err != nil {
			t.Fatal(err)
		}
		// node-exporter runs on its own, with no configuration or peers.
		image := jobs.Images(tools.Versions())[jobs.NodeExporter]["image"]
		for _, tc := range []struct {
			name   string
			config map[string]any
			runs   bool
		}{
			{"control", nil, true},
			{"bind-mounts", map[string]any{"volumes": []string{"/:/host", "/var/run/docker.sock:/var/run/docker.sock"}}, false},
			{"privileged", map[string]any{"privileged": true}, false},
		} {
			job := dockerJob("attack-"+tc.name, image)
			for k, v := range tc.config {
				job.TaskGroups[0].Tasks[0].Config[k] = v
			}
			if _, _, err := dev.Jobs().Register(job, nil); err != nil {
				if tc.runs {
					t.Fatalf("%s: dev's token cannot submit a plain docker job: %v", tc.name, err)
				}
				t.Logf("%s: refused at submit: %v", tc.name, err)
				continue
			}
			running, events := waitRunning(mgmt, *job.ID, 60*time.Second)
			mgmt.Jobs().Deregister(*job.ID, true, &nomadapi.WriteOptions{Namespace: "dev"})
			switch {
			case tc.runs && !running:
				t.Fatalf("%s: the plain docker task never ran, so the attacks below prove nothing: %s", tc.name, events)
			case !tc.runs && running:
				t.Errorf("%s: the task runs in dev", tc.name)
			case !tc.runs:
				t.Logf("%s: never ran: %s", tc.name, events)
			}
		}
	})

	t.Run("second up changes nothing", func(t *testing.T) {
		p := p.T(t)
		r := p.Up()
		if strings.Contains(r.Stdout, " changed ") {
			t.Errorf("a stage changed on the second up:\n%s", r.Stdout)
		}
	})

	t.Run("down leaves the machine as it was", func(t *testing.T) {
		p := p.T(t)
		if r := p.Run([]string{"down", "--auto-approve"}); r.Code != 0 {
			t.Fatalf("down: exit %d\n%s", r.Code, r.Output())
		}
		if d := before.diff(snap(t, client)); d != "" {
			t.Errorf("%s differs after down:\n%s", client.Name, d)
		}
		if out, err := lab.Exec(ctx, client, "cat", "/etc/docker/daemon.json"); err != nil || strings.TrimSpace(string(out)) != ownDaemon {
			t.Errorf("the machine's daemon.json after down: %q (%v), want %q", out, err, ownDaemon)
		}
		if out, err := lab.Exec(ctx, client, "systemctl", "is-active", "docker.service"); err == nil {
			t.Errorf("docker still runs after down: %s", out)
		}
		if out, err := lab.Exec(ctx, client, "systemctl", "is-enabled", "docker.service"); err == nil {
			t.Errorf("docker is still enabled after down: %s", out)
		}
	})
	p.AssertNoSecrets()
}

// dockerJob is a docker task of dev, as a CI job would submit it: no
// network of its own (the lab's engines have no bridge), no restarts.
func dockerJob(id, image string) *nomadapi.Job {
	ns, zero := "dev", 0
	job := nomadapi.NewServiceJob(id, id, "global", 50)
	job.Namespace = &ns
	job.Datacenters = []string{"*"}
	tg := nomadapi.NewTaskGroup("g", 1)
	tg.RestartPolicy = &nomadapi.RestartPolicy{Attempts: &zero, Mode: ptr("fail")}
	tg.ReschedulePolicy = &nomadapi.ReschedulePolicy{Attempts: &zero, Unlimited: ptr(false)}
	task := nomadapi.NewTask("t", "docker").SetConfig("image", image).SetConfig("network_mode", "none")
	task.Require(&nomadapi.Resources{CPU: ptr(20), MemoryMB: ptr(64)})
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}

// waitRunning waits until an allocation of dev's job runs, has failed (the
// job neither restarts nor reschedules), or for d; it returns the task
// events it saw.
func waitRunning(c *nomadapi.Client, id string, d time.Duration) (bool, string) {
	var events []string
	q := &nomadapi.QueryOptions{Namespace: "dev"}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(time.Second) {
		allocs, _, err := c.Jobs().Allocations(id, false, q)
		if err != nil {
			continue
		}
		events = events[:0]
		failed := false
		for _, a := range allocs {
			if a.ClientStatus == "running" {
				return true, ""
			}
			failed = failed || a.ClientStatus == "failed"
			for _, ts := range a.TaskStates {
				for _, e := range ts.Events {
					events = append(events, e.Type+": "+e.DisplayMessage)
				}
			}
		}
		if failed {
			break
		}
	}
	return false, strings.Join(events, "; ")
}

func ptr[T any](v T) *T { return &v }
