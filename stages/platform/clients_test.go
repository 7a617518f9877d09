package platform_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/stages/consul"
)

// scaleClients is issue 18's client scaling: 2 → 4 → 1 → 2 clients.
//   - Going to 4, the new clients are configured alone: the plan names
//     them only, no agent of the other nodes restarts, and dev's
//     application keeps answering through dev's Fabio.
//   - Going to 1, with dev's "journey" (two instances preferring the new
//     clients) answering through dev's Fabio throughout: the run is killed
//     once the clients drained and once they stopped; the next up
//     finishes.
//     Their allocations were migrated by the drain (none lost), and Nomad
//     and Consul no longer list them.
//   - Back to 2: the platform plans no changes.
func scaleClients(t *testing.T, p *platformtest.Platform) {
	env := p.Env("admin")
	cfg, err := os.ReadFile(p.Config)
	if err != nil {
		t.Fatal(err)
	}
	clients := func(n int) {
		p.WriteConfig(strings.Replace(string(cfg), "provider \"local\" {\n", fmt.Sprintf("provider \"local\" {\n  clients = %d\n", n), 1))
	}
	defer p.WriteConfig(string(cfg))
	cc, err := consul.NewClient(env["CONSUL_HTTP_ADDR"], env["CONSUL_CACERT"], env["CONSUL_HTTP_TOKEN"])
	if err != nil {
		t.Fatal(err)
	}
	nc := nomadClient(t, env, env["NOMAD_TOKEN"])
	servers := []string{"server-1", "server-2", "server-3"}
	pids := agentPids(t, p, append(servers, "client-1", "client-2")...)

	// 2 → 4.
	poll := startPoller(appAndClusters(t, env)...)
	clients(4)
	if r := p.Run([]string{"plan"}); r.Code != 4 || !strings.Contains(r.Stdout, "create node client-3") || !strings.Contains(r.Stdout, "create node client-4") {
		t.Errorf("plan with clients = 4: exit %d, want client-3 and client-4 created\n%s", r.Code, r.Stdout)
	}
	// The later stages plan against the recorded inventory: once the
	// nodes and their tokens exist, they plan the roles for them alone.
	p.Up("--only", "keys,provision,vault,pki")
	r := p.Run([]string{"plan", "--only", "consul,nomad"})
	for _, want := range []string{"install consul on client-3 (new node)", "install nomad on client-4 (new node)"} {
		if r.Code != 4 || !strings.Contains(r.Stdout, want) {
			t.Errorf("plan of consul and nomad: exit %d, want %q\n%s", r.Code, want, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, "on every node") || strings.Contains(r.Stdout, "client-1") {
		t.Errorf("plan with client-3 and client-4 new touches other nodes:\n%s", r.Stdout)
	}
	// Prometheus did not change: the new clients' targets are checked
	// (verify has nothing to do when they are up by then), the discovery
	// probe is not run again.
	if r := p.Up(); strings.Contains(r.Stdout, "the probe runs") {
		t.Errorf("up with two new clients probed Prometheus's discovery again:\n%s", r.Stdout)
	}
	poll.stop(t, "requests to dev's application, Consul and Nomad while two clients were added")
	notRestarted(t, p, pids, "while two clients were added", append(servers, "client-1", "client-2")...)
	eventually(t, time.Minute, "client-3 and client-4 ready in nomad and alive in consul", func() error {
		return members(nc, cc, "client-1", "client-2", "client-3", "client-4")
	})

	// 4 → 1, with an application on the clients that go.
	allocs := deployJourney(t, nc, cc)
	var moving []string
	for _, a := range allocs {
		if a.NodeName != "client-1" {
			moving = append(moving, a.ID)
		}
	}
	if len(moving) == 0 {
		t.Errorf("dev/journey runs on client-1 alone: no allocation will move")
	}
	// Not dev's web of the deploy subtest: one instance, down while its
	// client drains and its replacement starts.
	poll = startPoller(append(clusterProbes(t, env), func() error { return get200(env["FABIO_DEV_ADDR"] + "/journey/") })...)
	clients(1)
	r = p.Run([]string{"plan"})
	for _, want := range []string{"delete node client-2", "delete node client-3", "delete node client-4", "drains its allocations"} {
		if r.Code != 4 || !strings.Contains(r.Stdout, want) {
			t.Errorf("plan with clients = 1: exit %d, want %q\n%s", r.Code, want, r.Stdout)
		}
	}
	crash := func(point string) {
		t.Helper()
		if r := p.Run([]string{"up"}, "BOOTSTRAP_CRASHPOINT="+point); r.Code != -1 {
			t.Fatalf("the crash point %s did not fire: exit %d\n%s", point, r.Code, r.Output())
		}
	}
	crash("provision:after-drain")
	crash("provision:after-stop")
	p.Up()
	poll.stop(t, "requests to dev's journey through its Fabio, Consul and Nomad while three clients were drained and removed")
	notRestarted(t, p, pids, "while three clients were removed", append(servers, "client-1")...)
	if err := members(nc, cc, "client-1"); err != nil {
		t.Error(err)
	}
	q := &nomadapi.QueryOptions{Namespace: "dev"}
	for _, id := range moving {
		a, _, err := nc.Allocations().Info(id, q)
		if err != nil {
			t.Fatal(err)
		}
		if a.ClientStatus != "complete" || a.DesiredTransition.Migrate == nil || !*a.DesiredTransition.Migrate {
			t.Errorf("dev/journey's allocation on %s: client status %q, migrate %v; want complete and migrated by a drain", a.NodeName, a.ClientStatus, a.DesiredTransition.Migrate)
		}
	}
	now, _, err := nc.Jobs().Allocations("journey", false, q)
	if err != nil {
		t.Fatal(err)
	}
	running := 0
	for _, a := range now {
		if a.ClientStatus == "running" {
			running++
			if a.NodeName != "client-1" {
				t.Errorf("dev/journey runs on %s after it left", a.NodeName)
			}
		}
	}
	if running != 2 {
		t.Errorf("dev/journey has %d running allocations after the removal, want 2", running)
	}
	for _, n := range []string{"client-2", "client-3", "client-4"} {
		if _, err := os.Stat(filepath.Join(p.StateDir(), "nodes", n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s's node directory: %v, want it removed", n, err)
		}
	}
	if r := p.Run([]string{"plan"}); r.Code != 0 {
		t.Errorf("plan after the removal: exit %d, want no changes\n%s", r.Code, r.Output())
	}

	// Back to 2, as the platform was.
	p.WriteConfig(string(cfg))
	p.Up()
	eventually(t, time.Minute, "client-2 back in nomad and consul", func() error {
		return members(nc, cc, "client-1", "client-2")
	})
	if r := p.Run([]string{"plan"}); r.Code != 0 {
		t.Errorf("plan with 2 clients again: exit %d, want no changes\n%s", r.Code, r.Output())
	}
}

// members is nil when the Nomad clients are exactly the ready nodes
// names, and Consul's client members exactly the same, alive.
func members(nc *nomadapi.Client, cc *consulapi.Client, names ...string) error {
	nodes, _, err := nc.Nodes().List(nil)
	if err != nil {
		return err
	}
	var ready, alive []string
	for _, n := range nodes {
		if n.Status == nomadapi.NodeStatusReady {
			ready = append(ready, n.Name)
		} else {
			ready = append(ready, n.Name+" ("+n.Status+")")
		}
	}
	ms, err := cc.Agent().Members(false)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Tags["role"] != "node" {
			continue // a server
		}
		if m.Status == 1 { // serf: alive
			alive = append(alive, m.Name)
		} else {
			alive = append(alive, fmt.Sprintf("%s (status %d)", m.Name, m.Status))
		}
	}
	slices.Sort(ready)
	slices.Sort(alive)
	if !slices.Equal(ready, names) || !slices.Equal(alive, names) {
		return fmt.Errorf("nomad clients %v, consul clients %v; want %v", ready, alive, names)
	}
	return nil
}

// deployJourney runs dev's journey, two instances of a web server behind
// dev's Fabio at /journey/ that prefer client-3 and client-4, and returns
// its running allocations. Unlike web-ha its instances may share a node
// (one client is left at the end), and a stopped instance leaves Consul
// 5 s before it ends, the time Fabio needs to drop its route.
func deployJourney(t *testing.T, nc *nomadapi.Client, cc *consulapi.Client) []*nomadapi.AllocationListStub {
	t.Helper()
	job, err := nc.Jobs().ParseHCL(webJob("dev", "journey", 2, `"urlprefix-/journey strip=/journey"`, "ok"), true)
	if err != nil {
		t.Fatal(err)
	}
	job.Constraints = nil
	tg := job.TaskGroups[0]
	tg.ShutdownDelay = ptr(5 * time.Second)
	tg.Affinities = []*nomadapi.Affinity{{LTarget: "${node.unique.name}", Operand: "regexp", RTarget: "^client-[34]$", Weight: ptr[int8](100)}}
	if _, _, err := nc.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, _, err := nc.Jobs().Deregister("journey", true, &nomadapi.WriteOptions{Namespace: "dev"}); err != nil {
			t.Errorf("remove dev/journey: %v", err)
		}
	})
	var running []*nomadapi.AllocationListStub
	eventually(t, 2*time.Minute, "dev/journey's two instances running and passing their checks in consul", func() error {
		allocs, _, err := nc.Jobs().Allocations("journey", false, &nomadapi.QueryOptions{Namespace: "dev"})
		if err != nil {
			return err
		}
		running = running[:0]
		for _, a := range allocs {
			if a.ClientStatus == "running" {
				running = append(running, a)
			}
		}
		passing, _, err := cc.Health().Service("dev-journey", "", true, nil)
		if err != nil {
			return err
		}
		if len(running) != 2 || len(passing) != 2 {
			return fmt.Errorf("%d running, %d passing", len(running), len(passing))
		}
		return nil
	})
	return running
}
