package platform_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/stages/consul"
)

// scaleServers is issue 18's server scaling: 3 → 5 → 3 servers, the
// removal killed after a server left Consul and after it stopped, while
// dev's application is polled through its Fabio and Consul and Nomad are
// read through server-1. No request may fail, no agent of the nodes that
// stay restarts, and each Raft has as many voters as servers, one leader.
func scaleServers(t *testing.T, p *platformtest.Platform) {
	env := p.Env("admin")
	cfg, err := os.ReadFile(p.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer p.WriteConfig(string(cfg))
	stay := []string{"server-1", "server-2", "server-3", "client-1", "client-2"}
	pids := agentPids(t, p, stay...)
	cc, err := consul.NewClient(env["CONSUL_HTTP_ADDR"], env["CONSUL_CACERT"], env["CONSUL_HTTP_TOKEN"])
	if err != nil {
		t.Fatal(err)
	}
	nc := nomadClient(t, env, env["NOMAD_TOKEN"])

	poll := startPoller(appAndClusters(t, env)...)

	voters := func(want int) {
		t.Helper()
		eventually(t, time.Minute, fmt.Sprintf("%d voters and a leader in consul and nomad", want), func() error {
			craft, err := cc.Operator().RaftGetConfiguration(nil)
			if err != nil {
				return err
			}
			nraft, err := nc.Operator().RaftGetConfiguration(nil)
			if err != nil {
				return err
			}
			var cv, nv, cl, nl int
			for _, s := range craft.Servers {
				if s.Voter {
					cv++
				}
				if s.Leader {
					cl++
				}
			}
			for _, s := range nraft.Servers {
				if s.Voter {
					nv++
				}
				if s.Leader {
					nl++
				}
			}
			if cv != want || nv != want || cl != 1 || nl != 1 {
				return fmt.Errorf("consul: %d voters, %d leaders; nomad: %d voters, %d leaders", cv, cl, nv, nl)
			}
			return nil
		})
	}
	joinHCL := func() string {
		b, err := os.ReadFile(filepath.Join(p.StateDir(), "nodes", "client-1", "config", "consul.d", "join.hcl"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	// Up to the nomad stage: the platform jobs and verify would only
	// follow the servers there and back (Prometheus's scrape targets), and
	// the final plan checks the whole platform.
	only := []string{"--only", "keys,provision,vault,pki,consul,nomad"}
	p.WriteConfig(strings.Replace(string(cfg), "provider \"local\" {\n", "provider \"local\" {\n  servers = 5\n", 1))
	p.Up(only...)
	voters(5)
	if s := joinHCL(); strings.Count(s, `"`) != 10 {
		t.Errorf("client-1's join.hcl does not list 5 servers:\n%s", s)
	}

	p.WriteConfig(string(cfg))
	if r := p.Run([]string{"plan", "--only", "provision"}); r.Code != 4 || !strings.Contains(r.Stdout, "delete node server-5") || !strings.Contains(r.Stdout, "leaves Consul's and Nomad's Raft") {
		t.Errorf("plan with 3 servers: exit %d, want server-5's removal from Raft\n%s", r.Code, r.Output())
	}
	for _, cp := range []string{"provision:server-after-leave", "provision:server-after-stop"} {
		if r := p.Run(append([]string{"up"}, only...), "BOOTSTRAP_CRASHPOINT="+cp); r.Code != -1 {
			t.Fatalf("the crash point %s did not fire: exit %d\n%s", cp, r.Code, r.Output())
		}
	}
	p.Up(only...)
	voters(3)
	poll.stop(t, "requests to dev's application, Consul and Nomad while servers were added and removed")
	if s := joinHCL(); strings.Count(s, `"`) != 6 {
		t.Errorf("client-1's join.hcl does not list 3 servers:\n%s", s)
	}
	members, err := cc.Agent().Members(false)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if m.Name == "server-4" || m.Name == "server-5" {
			t.Errorf("consul still lists %s (status %d)", m.Name, m.Status)
		}
	}
	nm, err := nc.Agent().Members()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range nm.Members {
		if strings.HasPrefix(m.Name, "server-4.") || strings.HasPrefix(m.Name, "server-5.") {
			t.Errorf("nomad still lists %s (%s)", m.Name, m.Status)
		}
	}
	toks, _, err := cc.ACL().TokenList(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if tok.Description == "bootstrap: agent-server-4" || tok.Description == "bootstrap: agent-server-5" {
			t.Errorf("the removed server's consul token is left: %s", tok.Description)
		}
	}
	for _, n := range []string{"server-4", "server-5"} {
		if _, err := os.Stat(filepath.Join(p.StateDir(), "nodes", n)); err == nil {
			t.Errorf("%s's node directory is left", n)
		}
		if _, err := os.Stat(filepath.Join(p.StateDir(), "secrets", "consul", "tokens", "agent-"+n)); err == nil {
			t.Errorf("%s's consul agent token is left in the secret store", n)
		}
	}
	notRestarted(t, p, pids, "while servers were added and removed", stay...)
	if r := p.Run([]string{"plan"}); r.Code != 0 {
		t.Errorf("plan after the scaling: exit %d\n%s", r.Code, r.Output())
	}
}

// notRestarted fails the test when an agent of nodes runs another process
// than in before (agentPids).
func notRestarted(t *testing.T, p *platformtest.Platform, before map[string]int, while string, nodes ...string) {
	t.Helper()
	var changed []string
	for k, v := range agentPids(t, p, nodes...) {
		if before[k] != v {
			changed = append(changed, k)
		}
	}
	slices.Sort(changed)
	if len(changed) > 0 {
		t.Errorf("agents restarted %s: %s", while, strings.Join(changed, ", "))
	}
}
