package platform_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
	"github.com/platform-bootstrap/bootstrap/stages/consul"
	"github.com/platform-bootstrap/bootstrap/stages/nomad"
	"github.com/platform-bootstrap/bootstrap/tools"
)

// upgradeAgents is issue 18's rolling upgrade. TestPlatformDay2 came up on the
// patch releases of Consul and Nomad before the pins
// (platformtest.PreviousBinDir); upgrade links the pinned binaries in
// their place, as make tools does after a version bump. plan names the new
// binaries; an up is killed once the first Consul server runs the new binary
// and the next up finishes: servers one at a time with the leader last,
// then the clients, while dev's application answers through its Fabio and
// each cluster keeps answering through one of its servers.
func upgradeAgents(t *testing.T, p *platformtest.Platform, upgrade, upgradeJob func()) {
	v := tools.Versions()
	env := p.Env("admin")
	servers := []string{"server-1", "server-2", "server-3"}
	nodes := append(slices.Clone(servers), "client-1", "client-2")
	only := []string{"--only", "keys,provision,vault,pki,consul,nomad"}

	cc, err := consul.NewClient(env["CONSUL_HTTP_ADDR"], env["CONSUL_CACERT"], env["CONSUL_HTTP_TOKEN"])
	if err != nil {
		t.Fatal(err)
	}
	nc := nomadClient(t, env, env["NOMAD_TOKEN"])
	if err := agentVersions(cc, nc, v["CONSUL_PREVIOUS_VERSION"], v["NOMAD_PREVIOUS_VERSION"], len(nodes)); err != nil {
		t.Fatalf("before the upgrade: %v", err)
	}
	consulLeader, nomadLeader := leaderNode(t, cc, nc)
	// Any server answers for its cluster: the probes fail only when none does.
	var consuls []*consulapi.Client
	var nomads []*nomadapi.Client
	for _, s := range servers {
		addr := serverAddr(t, cc, s)
		c, err := consul.NewClient(withHost(t, env["CONSUL_HTTP_ADDR"], addr), env["CONSUL_CACERT"], env["CONSUL_HTTP_TOKEN"])
		if err != nil {
			t.Fatal(err)
		}
		n, err := nomad.NewClient(withHost(t, env["NOMAD_ADDR"], addr), env["NOMAD_CACERT"], env["NOMAD_TOKEN"])
		if err != nil {
			t.Fatal(err)
		}
		consuls, nomads = append(consuls, c), append(nomads, n)
	}
	before := agentPids(t, p, nodes...)
	// The default Vault is one node (server-1): it restarts and is unsealed
	// again. Its rolling restart is TestVaultHA's.
	vaultPid, err := proc.ReadPidFile(filepath.Join(p.StateDir(), "nodes", "server-1", "run", "vault.pid"))
	if err != nil {
		t.Fatal(err)
	}

	upgrade()
	r := p.Run([]string{"plan", "--only", "vault,consul,nomad"})
	if r.Code != 4 {
		t.Errorf("plan after the new binaries: exit %d, want 4\n%s", r.Code, r.Output())
	}
	for _, want := range []string{"consul on every node (new binaries: consul;", "nomad on every node (new binaries: nomad;", "vault on server-1 (new binaries: vault)"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("plan does not say %q:\n%s", want, r.Stdout)
		}
	}

	// A client's Consul agent starts the checks it restores critical until
	// they run again (up to one interval), so the services of its node
	// leave Fabio's routes for that long: an application with instances
	// on two clients keeps answering, one with a single instance there
	// does not. The first must not fail; the second's misses are counted.
	deployTwoInstances(t, nc)
	eventually(t, 2*time.Minute, "dev-web-ha passing twice in consul and routed by dev's fabio", func() error {
		entries, _, err := cc.Health().Service("dev-web-ha", "", true, nil)
		if err != nil {
			return err
		}
		if len(entries) != 2 {
			return fmt.Errorf("%d passing instances", len(entries))
		}
		return get200(env["FABIO_DEV_ADDR"] + "/web-ha/")
	})
	single := startPoller(func() error { return get200(env["FABIO_DEV_ADDR"] + "/web/") })
	poll := startPoller(
		func() error { return get200(env["FABIO_DEV_ADDR"] + "/web-ha/") },
		func() error {
			return anyAnswers(consuls, func(c *consulapi.Client) error { _, _, err := c.Catalog().Nodes(nil); return err })
		},
		func() error {
			return anyAnswers(nomads, func(c *nomadapi.Client) error {
				_, _, err := c.Jobs().List(&nomadapi.QueryOptions{Namespace: "*"})
				return err
			})
		},
	)
	w := watchRestarts(t, p, before)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancel()
		w.waitFor(ctx, func(order []string) bool {
			return slices.ContainsFunc(order, func(a string) bool { return strings.HasPrefix(a, "server-") && strings.HasSuffix(a, "/consul") })
		})
	}()
	r = p.RunContext(ctx, append([]string{"up", "--auto-approve"}, only...))
	cancel()
	if r.Code != -1 {
		t.Errorf("the up killed after the first server's upgrade: exit %d, want -1 (killed)\n%s", r.Code, r.Output())
	}
	p.Up(only...)
	order := w.stop()
	poll.stop(t, "requests to dev's two-instance application and to any Consul and Nomad server during the upgrade")
	single.cancel()
	single.done.Wait()
	t.Logf("dev's single-instance application: %d of %d requests failed during the upgrade (its client's Consul restarting): %s",
		len(single.failures), single.rounds, strings.Join(single.failures, "; "))
	t.Logf("restart order: %s", strings.Join(order, " "))

	if err := agentVersions(cc, nc, v["CONSUL_VERSION"], v["NOMAD_VERSION"], len(nodes)); err != nil {
		t.Errorf("after the upgrade: %v", err)
	}
	if pid, err := proc.ReadPidFile(filepath.Join(p.StateDir(), "nodes", "server-1", "run", "vault.pid")); err != nil || pid == vaultPid {
		t.Errorf("vault on server-1 runs as pid %d (%v), before the upgrade %d: not restarted on its new binary", pid, err, vaultPid)
	}
	if h, err := vaultClient(t, env).Sys().Health(); err != nil || h.Sealed {
		t.Errorf("vault after the upgrade: %+v, %v", h, err)
	}
	for _, tc := range []struct {
		svc, leader string
		nodes       []string
	}{{"consul", consulLeader, nodes}, {"nomad", nomadLeader, nodes}} {
		var got []string
		for _, a := range order {
			if strings.HasSuffix(a, "/"+tc.svc) {
				got = append(got, strings.TrimSuffix(a, "/"+tc.svc))
			}
		}
		if len(got) != len(tc.nodes) {
			t.Errorf("%s restarted on %v, want each of %v once", tc.svc, got, tc.nodes)
			continue
		}
		// Servers first, the leader of before the upgrade last of them,
		// then the clients.
		if !slices.Contains(servers, got[0]) || !slices.Contains(servers, got[1]) || got[2] != tc.leader {
			t.Errorf("%s restarted in the order %v: want the two followers, then the leader %s, then the clients", tc.svc, got, tc.leader)
		}
	}
	st := p.Run([]string{"status"})
	for _, want := range []string{"v" + v["CONSUL_VERSION"], "v" + v["NOMAD_VERSION"]} {
		if n := strings.Count(st.Stdout, want); n != len(nodes) {
			t.Errorf("status shows %s on %d agents, want %d:\n%s", want, n, len(nodes), st.Stdout)
		}
	}
	r = p.Up(only...)
	for _, st := range []string{"consul", "nomad"} {
		if !strings.Contains(r.Stdout, fmt.Sprintf("%-9s  unchanged", st)) {
			t.Errorf("stage %s changed on the up after the upgrade:\n%s", st, r.Stdout)
		}
	}

	// A platform job's binary (raw_exec): a new node-exporter file
	// replaces the job's allocations.
	running := func() []string {
		allocs, _, err := nc.Jobs().Allocations("node-exporter", false, &nomadapi.QueryOptions{Namespace: "general"})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, a := range allocs {
			if a.ClientStatus == nomadapi.AllocClientStatusRunning {
				ids = append(ids, a.ID)
			}
		}
		return ids
	}
	old := running()
	upgradeJob()
	if r := p.Run([]string{"plan", "--only", "jobs"}); r.Code != 4 || !strings.Contains(r.Stdout, "job general/node-exporter") {
		t.Errorf("plan after node-exporter's new binary: exit %d, want 4 and the job\n%s", r.Code, r.Output())
	}
	// The nomad stage restarts the servers' own node-exporter (not a job).
	p.Up("--only", "keys,provision,vault,pki,consul,nomad,jobs")
	now := running()
	if len(now) != 2 || slices.ContainsFunc(now, func(id string) bool { return slices.Contains(old, id) }) {
		t.Errorf("node-exporter's running allocations %v (before %v): want 2 new ones", now, old)
	}
}

// deployTwoInstances runs dev's web-ha, two instances of a web server on
// distinct clients behind dev's Fabio at /web-ha/, and removes it when the
// test ends.
func deployTwoInstances(t *testing.T, nc *nomadapi.Client) {
	t.Helper()
	job, err := nc.Jobs().ParseHCL(webJob("dev", "web-ha", 2, `"urlprefix-/web-ha strip=/web-ha"`, "ok"), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := nc.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, _, err := nc.Jobs().Deregister("web-ha", true, &nomadapi.WriteOptions{Namespace: "dev"}); err != nil {
			t.Errorf("remove dev/web-ha: %v", err)
		}
	})
	eventually(t, 2*time.Minute, "dev/web-ha's two instances healthy", func() error {
		sv, _, err := nc.Jobs().Summary("web-ha", &nomadapi.QueryOptions{Namespace: "dev"})
		if err != nil {
			return err
		}
		if s := sv.Summary["web"]; s.Running != 2 {
			return fmt.Errorf("%d running", s.Running)
		}
		return nil
	})
}

// agentVersions checks that every Consul agent and Nomad server and client
// of the n nodes runs the given versions.
func agentVersions(cc *consulapi.Client, nc *nomadapi.Client, consulV, nomadV string, n int) error {
	var errs []error
	members, err := cc.Agent().Members(false)
	if err != nil {
		return err
	}
	if len(members) != n {
		errs = append(errs, fmt.Errorf("consul has %d members, want %d", len(members), n))
	}
	for _, m := range members {
		if build, _, _ := strings.Cut(m.Tags["build"], ":"); build != consulV {
			errs = append(errs, fmt.Errorf("consul on %s is %s, want %s", m.Name, build, consulV))
		}
	}
	nm, err := nc.Agent().Members()
	if err != nil {
		return err
	}
	for _, m := range nm.Members {
		if m.Tags["build"] != nomadV {
			errs = append(errs, fmt.Errorf("nomad server %s is %s, want %s", m.Name, m.Tags["build"], nomadV))
		}
	}
	clients, _, err := nc.Nodes().List(nil)
	if err != nil {
		return err
	}
	for _, c := range clients {
		if c.Status == nomadapi.NodeStatusReady && c.Version != nomadV {
			errs = append(errs, fmt.Errorf("nomad client %s is %s, want %s", c.Name, c.Version, nomadV))
		}
	}
	return errors.Join(errs...)
}

// leaderNode returns the names of the nodes whose servers lead Consul and
// Nomad.
func leaderNode(t *testing.T, cc *consulapi.Client, nc *nomadapi.Client) (consulLeader, nomadLeader string) {
	t.Helper()
	craft, err := cc.Operator().RaftGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range craft.Servers {
		if s.Leader {
			consulLeader = s.Node
		}
	}
	nraft, err := nc.Operator().RaftGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range nraft.Servers {
		if s.Leader {
			nomadLeader, _, _ = strings.Cut(s.Node, ".")
		}
	}
	if consulLeader == "" || nomadLeader == "" {
		t.Fatalf("leaders: consul %q, nomad %q", consulLeader, nomadLeader)
	}
	return consulLeader, nomadLeader
}

// serverAddr is node's address in Consul's catalog.
func serverAddr(t *testing.T, cc *consulapi.Client, node string) string {
	t.Helper()
	n, _, err := cc.Catalog().Node(node, nil)
	if err != nil || n == nil {
		t.Fatalf("consul catalog: node %s: %v", node, err)
	}
	return n.Node.Address
}

// withHost is the URL u with host addr and u's port.
func withHost(t *testing.T, u, addr string) string {
	t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	pu.Host = net.JoinHostPort(addr, pu.Port())
	return pu.String()
}

// anyAnswers succeeds when f succeeds against one of the clients.
func anyAnswers[C any](clients []C, f func(C) error) error {
	var errs []error
	for _, c := range clients {
		err := f(c)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("no server answers: %w", errors.Join(errs...))
}

// restartWatch records, every 100 ms, which agents (node/service) run
// under another pid than before, in the order they first did.
type restartWatch struct {
	mu     sync.Mutex
	order  []string
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func watchRestarts(t *testing.T, p *platformtest.Platform, before map[string]int) *restartWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &restartWatch{cancel: cancel}
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		for ctx.Err() == nil {
			for agent, pid := range before {
				node, svc, _ := strings.Cut(agent, "/")
				now, err := proc.ReadPidFile(filepath.Join(p.StateDir(), "nodes", node, "run", svc+".pid"))
				w.mu.Lock()
				if err == nil && now != pid && !slices.Contains(w.order, agent) {
					w.order = append(w.order, agent)
				}
				w.mu.Unlock()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return w
}

// waitFor returns once done holds for the restarts so far, or ctx ends.
func (w *restartWatch) waitFor(ctx context.Context, done func(order []string) bool) {
	for ctx.Err() == nil {
		w.mu.Lock()
		ok := done(w.order)
		w.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (w *restartWatch) stop() []string {
	w.cancel()
	w.done.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.order)
}
