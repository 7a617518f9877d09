package jobs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/nomadjob"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	platformjobs "github.com/platform-bootstrap/bootstrap/jobs"
)

// sleeper is a raw_exec job whose task runs only while flag exists: it
// fails at once, without restarts, when the flag is missing.
func sleeper(id, typ, flag string) *nomadapi.Job {
	job := nomadapi.NewServiceJob(id, id, "global", 50)
	if typ == "system" {
		job = nomadapi.NewSystemJob(id, id, "global", 50)
	}
	ns := platformjobs.Namespace
	job.Namespace = &ns
	job.Datacenters = []string{"*"}
	tg := nomadapi.NewTaskGroup("g", 1)
	attempts, mode := 0, "fail"
	tg.RestartPolicy = &nomadapi.RestartPolicy{Attempts: &attempts, Mode: &mode}
	if typ == "service" {
		// The deployment fails as soon as the task does (no restarts), and
		// Nomad's own rescheduling waits longer than the test. The healthy
		// deadline leaves a loaded machine time to start the restarted
		// allocation (one took 2 s, past a 3 s deadline).
		minHealthy, healthy, progress := time.Second, 30*time.Second, 40*time.Second
		tg.Update = &nomadapi.UpdateStrategy{MinHealthyTime: &minHealthy, HealthyDeadline: &healthy, ProgressDeadline: &progress}
		delay := time.Hour
		tg.ReschedulePolicy = &nomadapi.ReschedulePolicy{Delay: &delay}
	}
	task := nomadapi.NewTask("t", "raw_exec").
		SetConfig("command", "/bin/sh").
		SetConfig("args", []string{"-c", "test -f " + flag + " || { echo no flag >&2; exit 1; }; exec sleep 600"})
	cpu, mem := 20, 16
	task.Require(&nomadapi.Resources{CPU: &cpu, MemoryMB: &mem})
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}

// TestHealth runs jobs on a real Nomad: a job is healthy only when its
// current version runs; a failed allocation fails the wait at once with the
// task's stderr, and restart brings the job back once the cause is gone.
func TestHealth(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Nomad")
	}
	n := testcluster.StartNomad(t, testcluster.NomadOptions{Servers: 1, Clients: 1})
	p := &platform{nomad: n.Client}
	if _, err := n.Client.Namespaces().Register(&nomadapi.Namespace{Name: platformjobs.Namespace}, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	for _, typ := range []string{"system", "service"} {
		t.Run(typ, func(t *testing.T) {
			id := typ + "-job"
			flag := filepath.Join(t.TempDir(), "flag")
			if _, _, err := n.Client.Jobs().Register(sleeper(id, typ, flag), general()); err != nil {
				t.Fatal(err)
			}
			defer n.Client.Jobs().Deregister(id, true, general())

			err := waitHealthy(ctx, p, id)
			if err == nil {
				t.Fatal("a job whose task fails was reported healthy")
			}
			if !strings.Contains(err.Error(), "no flag") {
				t.Errorf("the error does not show the task's stderr: %v", err)
			}
			h, err := nomadjob.Check(ctx, n.Client, platformjobs.Namespace, id)
			if err != nil {
				t.Fatal(err)
			}
			if h.Healthy || !h.Failed {
				t.Fatalf("health of a failed job: %+v", h)
			}

			// The cause is gone (a reboot is over, a port is free again):
			// restart brings the job back.
			if err := os.WriteFile(flag, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			job, _, err := n.Client.Jobs().Info(id, &nomadapi.QueryOptions{Namespace: platformjobs.Namespace})
			if err != nil {
				t.Fatal(err)
			}
			if err := restart(ctx, p, job, h); err != nil {
				t.Fatal(err)
			}
			if err := waitHealthy(ctx, p, id); err != nil {
				t.Fatal(err)
			}
			if h, err := nomadjob.Check(ctx, n.Client, platformjobs.Namespace, id); err != nil || !h.Healthy {
				t.Fatalf("health after restart: %+v, %v", h, err)
			}

		})
	}
}
