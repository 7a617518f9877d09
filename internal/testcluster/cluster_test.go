package testcluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/proc"
)

// TestClusters is the acceptance test of the helpers: a TLS dev Vault, a
// 3-server Consul with ACLs and a client agent, a 3-server Nomad with ACLs,
// Consul integration and a raw_exec client running a job; the Nomad leader
// is killed and the cluster must recover with the job untouched. When the
// test ends no process may be left under any of the clusters' directories.
func TestClusters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Vault, Consul and Nomad servers")
	}
	var dirs []string
	// Registered first, so it runs after every cleanup of the helpers.
	t.Cleanup(func() {
		for _, d := range dirs {
			pids, err := proc.Under(d)
			if err != nil {
				t.Error(err)
				continue
			}
			for _, pid := range pids {
				t.Errorf("process %d (%s) under %s survived the cleanup", pid, cmdline(pid), d)
				_ = proc.Kill(context.Background(), pid)
			}
		}
	})

	start := time.Now()
	v := StartVault(t)
	dirs = append(dirs, v.Dir)
	t.Logf("vault (dev, TLS): ready in %v", time.Since(start).Round(time.Millisecond))
	h, err := v.Client.Sys().Health()
	if err != nil {
		t.Fatal(err)
	}
	if !h.Initialized || h.Sealed {
		t.Errorf("vault health: initialized=%v sealed=%v", h.Initialized, h.Sealed)
	}
	if !strings.HasPrefix(v.Addr, "https://127.") {
		t.Errorf("vault address %s: want https on 127.x", v.Addr)
	}
	// The server certificate is signed by the dev CA only: a client
	// trusting the system roots refuses it.
	if resp, err := http.Get(v.Addr + "/v1/sys/health"); err == nil {
		resp.Body.Close()
		t.Errorf("vault accepted by a client without its CA: TLS is not what we think")
	}
	if s, err := v.Client.Auth().Token().LookupSelf(); err != nil {
		t.Errorf("root token lookup: %v", err)
	} else if fmt.Sprint(s.Data["policies"]) != "[root]" {
		t.Errorf("token policies %v, want [root]", s.Data["policies"])
	}

	start = time.Now()
	c := StartConsul(t, ConsulOptions{ACL: true, Clients: 1})
	dirs = append(dirs, c.Dir)
	t.Logf("consul (3 servers, ACL, 1 client): ready in %v", time.Since(start).Round(time.Millisecond))
	checkConsul(t, c)

	start = time.Now()
	n := StartNomad(t, NomadOptions{ACL: true, Consul: c})
	dirs = append(dirs, n.Dir)
	t.Logf("nomad (3 servers, ACL, Consul, 1 client): ready in %v", time.Since(start).Round(time.Millisecond))
	checkNomad(t, n, c)

	allocID, taskPid := runSleeper(t, n)

	old := n.Leader(t)
	idx := -1
	for i := range n.Servers {
		if n.Subnet.IP(i+1)+":4647" == old {
			idx = i
		}
	}
	if idx < 0 {
		t.Fatalf("leader %s is none of the servers", old)
	}
	t.Logf("killing the nomad leader %s (%s, pid %d)", old, n.Servers[idx].Name, n.Servers[idx].Pid())
	killed := time.Now()
	if err := n.Servers[idx].Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	servers := make([]*nomadapi.Client, len(n.Servers))
	for i := range servers {
		servers[i] = nomadClient(t, n.HTTPAddrs[i], n.Token)
	}
	var leader string
	err = waitFor(ctx, "a new nomad leader", func(ctx context.Context) error {
		for i, p := range n.Servers {
			if !p.Running() {
				continue
			}
			l, err := nomadLeader(ctx, servers[i])
			if err != nil || l == "" || l == old {
				return fmt.Errorf("%s: leader %q, %v", p.Name, l, err)
			}
			leader = l
		}
		return nil
	})
	if err != nil {
		fatal(t, n.Servers, "%v", err)
	}
	t.Logf("new nomad leader %s after %v", leader, time.Since(killed).Round(time.Millisecond))

	// The job is untouched: same allocation, still running, never
	// restarted, and the same task process.
	allocs, _, err := n.Client.Jobs().Allocations("sleeper", false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(allocs) != 1 || allocs[0].ID != allocID || allocs[0].ClientStatus != nomadapi.AllocClientStatusRunning {
		t.Errorf("after failover: allocations %s, want only %s running", allocSummary(allocs), allocID)
	}
	if ts := allocs[0].TaskStates["t"]; ts == nil || ts.Restarts != 0 {
		t.Errorf("task restarted during failover: %+v", ts)
	}
	if !proc.Alive(taskPid) {
		t.Errorf("task process %d died during failover", taskPid)
	}
}

func checkConsul(t *testing.T, c *Consul) {
	t.Helper()
	cfg, err := c.Client.Operator().RaftGetConfiguration(nil)
	if err != nil {
		t.Fatal(err)
	}
	voters, leaders := 0, 0
	for _, s := range cfg.Servers {
		if s.Voter {
			voters++
		}
		if s.Leader {
			leaders++
			if s.Address != c.Leader(t) {
				t.Errorf("raft leader %s, status/leader %s", s.Address, c.Leader(t))
			}
		}
	}
	if voters != 3 || leaders != 1 {
		t.Errorf("consul raft: %d voters, %d leaders; want 3 and 1", voters, leaders)
	}
	agents := append(append([]*Proc(nil), c.Servers...), c.Clients...)
	for i, addr := range c.HTTPAddrs {
		cl := consulClient(t, addr, c.Token)
		self, err := cl.Agent().Self()
		if err != nil {
			t.Errorf("consul agent %s: %v", addr, err)
			continue
		}
		if l, err := cl.Status().Leader(); err != nil || l == "" {
			t.Errorf("consul agent %s: leader %q, %v", addr, l, err)
		}
		if got := self["Config"]["NodeName"]; got != agents[i].Name {
			t.Errorf("consul agent at %s is %v, want %s", addr, got, agents[i].Name)
		}
	}
	// ACLs are enforced: without a token, listing tokens is refused.
	anon := consulClient(t, c.HTTPAddrs[0], "")
	if _, _, err := anon.ACL().TokenList(nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("consul ACL token list without a token: %v, want 403", err)
	}
}

func checkNomad(t *testing.T, n *Nomad, c *Consul) {
	t.Helper()
	for _, addr := range n.HTTPAddrs {
		h, err := nomadClient(t, addr, n.Token).Agent().Health()
		if err != nil {
			t.Errorf("nomad agent %s: health: %v", addr, err)
			continue
		}
		if (h.Server != nil && !h.Server.Ok) || (h.Client != nil && !h.Client.Ok) {
			t.Errorf("nomad agent %s: unhealthy: %+v %+v", addr, h.Server, h.Client)
		}
	}
	nodes, _, err := n.Client.Nodes().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 {
		t.Fatalf("nomad nodes: %d, want 1", len(nodes))
	}
	node, _, err := n.Client.Nodes().Info(nodes[0].ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := n.Subnet.IP(4); node.Meta["node_address"] != want {
		t.Errorf("node meta node_address = %q, want %q", node.Meta["node_address"], want)
	}
	// ACLs are enforced.
	if _, _, err := nomadClient(t, n.HTTPAddrs[0], "").Jobs().List(nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("nomad job list without a token: %v, want 403", err)
	}
	// The agents registered themselves in Consul (the token works).
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err = waitFor(ctx, "nomad services in consul", func(ctx context.Context) error {
		for svc, want := range map[string]int{"nomad": 3, "nomad-client": 1} {
			entries, _, err := c.Client.Health().Service(svc, "", false, (&consulapi.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return err
			}
			if len(entries) < want {
				return fmt.Errorf("%d instances of %s, want %d", len(entries), svc, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// runSleeper runs a raw_exec job of `/bin/sleep` and returns its allocation
// and the pid of the task, found below the client's directory.
func runSleeper(t *testing.T, n *Nomad) (allocID string, pid int) {
	t.Helper()
	job := &nomadapi.Job{
		ID:          ptr("sleeper"),
		Type:        ptr("service"),
		Datacenters: []string{"*"},
		TaskGroups: []*nomadapi.TaskGroup{{
			Name:  ptr("g"),
			Count: ptr(1),
			Tasks: []*nomadapi.Task{{
				Name:      "t",
				Driver:    "raw_exec",
				Config:    map[string]any{"command": "/bin/sleep", "args": []string{"300"}},
				Resources: &nomadapi.Resources{CPU: ptr(100), MemoryMB: ptr(64)},
			}},
		}},
	}
	start := time.Now()
	if _, _, err := n.Client.Jobs().Register(job, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := waitFor(ctx, "sleeper allocation running", func(ctx context.Context) error {
		allocs, _, err := n.Client.Jobs().Allocations("sleeper", false, (&nomadapi.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		for _, a := range allocs {
			if a.ClientStatus == nomadapi.AllocClientStatusFailed {
				return permanent{fmt.Errorf("allocation failed: %s", allocSummary(allocs))}
			}
		}
		if len(allocs) != 1 || allocs[0].ClientStatus != nomadapi.AllocClientStatusRunning {
			return fmt.Errorf("allocations: %s", allocSummary(allocs))
		}
		allocID = allocs[0].ID
		return nil
	})
	if err != nil {
		fatal(t, append(n.Servers, n.Clients...), "%v", err)
	}
	t.Logf("raw_exec job running in %v", time.Since(start).Round(time.Millisecond))

	var seen []string
	for _, c := range n.Clients {
		pids, err := proc.Under(c.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pids {
			cl := cmdline(p)
			seen = append(seen, fmt.Sprintf("%s: %d: %s", c.Name, p, cl))
			if cl == "/bin/sleep 300" {
				pid = p
			}
		}
	}
	t.Logf("processes under the nomad clients' directories:\n%s", strings.Join(seen, "\n"))
	if pid == 0 {
		t.Fatal("the task process is not found under any client's directory")
	}
	return allocID, pid
}

func allocSummary(allocs []*nomadapi.AllocationListStub) string {
	var s []string
	for _, a := range allocs {
		s = append(s, a.ID[:8]+"="+a.ClientStatus)
	}
	return "[" + strings.Join(s, " ") + "]"
}

func cmdline(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "(gone)"
		}
		return err.Error()
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

func ptr[T any](v T) *T { return &v }

// TestSmallClusters covers the other shapes: a single Consul server without
// ACLs, and a single Nomad server without Consul or ACLs sharing its subnet,
// with two clients that must get distinct dynamic port ranges. One client
// crashes with a task running; its leftovers must still be cleaned up.
func TestSmallClusters(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real Consul and Nomad servers")
	}
	var dirs []string
	t.Cleanup(func() {
		for _, d := range dirs {
			pids, err := proc.Under(d)
			if err != nil {
				t.Error(err)
				continue
			}
			for _, pid := range pids {
				t.Errorf("process %d (%s) under %s survived the cleanup", pid, cmdline(pid), d)
				_ = proc.Kill(context.Background(), pid)
			}
		}
	})

	start := time.Now()
	c := StartConsul(t, ConsulOptions{Servers: 1})
	dirs = append(dirs, c.Dir)
	t.Logf("consul (1 server): ready in %v", time.Since(start).Round(time.Millisecond))
	if c.Token != "" {
		t.Error("consul without ACL has a token")
	}
	if l := c.Leader(t); l != c.Subnet.IP(1)+":8300" {
		t.Errorf("consul leader %s, want the only server", l)
	}

	start = time.Now()
	n := StartNomad(t, NomadOptions{Servers: 1, Clients: 2, Subnet: &c.Subnet})
	dirs = append(dirs, n.Dir)
	t.Logf("nomad (1 server, 2 clients): ready in %v", time.Since(start).Round(time.Millisecond))
	if n.Token != "" {
		t.Error("nomad without ACL has a token")
	}
	if want := []string{"http://" + c.Subnet.IP(1) + ":4646", "http://" + c.Subnet.IP(2) + ":4646", "http://" + c.Subnet.IP(3) + ":4646"}; strings.Join(n.HTTPAddrs, " ") != strings.Join(want, " ") {
		t.Errorf("HTTPAddrs = %v, want %v", n.HTTPAddrs, want)
	}
	if len(n.DataDirs) != 3 {
		t.Errorf("DataDirs = %v", n.DataDirs)
	}
	nodes, _, err := n.Client.Nodes().List(nil)
	if err != nil {
		t.Fatal(err)
	}
	type span struct{ lo, hi int }
	var spans []span
	for _, stub := range nodes {
		node, _, err := n.Client.Nodes().Info(stub.ID, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := node.NodeResources
		if r == nil || r.MinDynamicPort == 0 || r.MaxDynamicPort <= r.MinDynamicPort {
			t.Fatalf("%s: dynamic ports %+v", node.Name, r)
		}
		for _, s := range spans {
			if r.MinDynamicPort <= s.hi && s.lo <= r.MaxDynamicPort {
				t.Errorf("%s: dynamic ports %d-%d overlap another client's %d-%d", node.Name, r.MinDynamicPort, r.MaxDynamicPort, s.lo, s.hi)
			}
		}
		spans = append(spans, span{r.MinDynamicPort, r.MaxDynamicPort})
		want := c.Subnet.IP(1 + slices.Index([]string{"nomad-c1", "nomad-c2"}, node.Name) + 1)
		if node.Meta["node_address"] != want {
			t.Errorf("%s: meta node_address %q, want %q", node.Name, node.Meta["node_address"], want)
		}
	}
	if len(spans) != 2 {
		t.Fatalf("%d nodes, want 2", len(spans))
	}

	_, taskPid := runSleeper(t, n)
	// Crash the client that runs the task: the task must outlive it (that
	// is what the cleanup has to deal with) and then be stopped by it.
	var runner *Proc
	for _, p := range n.Clients {
		if pids, _ := proc.Under(p.Dir); slices.Contains(pids, taskPid) {
			runner = p
		}
	}
	if runner == nil {
		t.Fatal("no client runs the task")
	}
	if err := runner.Kill(); err != nil {
		t.Fatal(err)
	}
	if !proc.Alive(taskPid) {
		t.Error("the task died with its client: the leftover cleanup is not exercised")
	}
}
