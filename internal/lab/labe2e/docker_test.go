package labe2e_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/imagearchive"
	"github.com/platform-bootstrap/bootstrap/internal/lab"
	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
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
	st, err := lab.Up(ctx, lab.Config{Dir: labDir, Name: "ld", Net: 206, Nodes: lab.Nodes(1, 1), BinDir: binDir, Log: testLog{t}})
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
`, st.InventoryFile(), binDir, grafana, filepath.Join(binDir, "images")))
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
		if out, err := lab.Exec(ctx, client, "systemctl", "is-active", "docker.service"); err == nil {
			t.Errorf("docker still runs after down: %s", out)
		}
		if out, err := lab.Exec(ctx, client, "systemctl", "is-enabled", "docker.service"); err == nil {
			t.Errorf("docker is still enabled after down: %s", out)
		}
	})
	p.AssertNoSecrets()
}
