package testcluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	consulapi "github.com/hashicorp/consul/api"
)

// ConsulOptions shape a Consul cluster. The zero value is three servers.
type ConsulOptions struct {
	Servers int // default 3
	Clients int // client agents; default 0
	ACL     bool
	Subnet  *Subnet // default: a fresh one
}

// Consul is a running Consul cluster: server i (1-based) on Subnet.IP(i),
// client agent j on Subnet.IP(Servers+j), all with the standard ports and
// plain HTTP.
type Consul struct {
	Servers, Clients []*Proc
	HTTPAddrs        []string          // http://IP:8500 of the servers, then of the clients
	Token            string            // with ACL: the bootstrap (management) token
	Client           *consulapi.Client // talks to the first server
	Subnet           Subnet
	DataDirs         []string // servers', then clients'
	Dir              string   // all files of the cluster; removed when the test ends
}

// StartConsul starts a Consul cluster and waits until it has a leader that
// every server agrees on and every agent is an alive member in the catalog.
// With ACL, it bootstraps the ACL system (Token) and gives each agent the
// token so that it may register itself.
func StartConsul(t testing.TB, opts ConsulOptions) *Consul {
	t.Helper()
	bin := Bin(t, "consul")
	if opts.Servers <= 0 {
		opts.Servers = 3
	}
	opts.Clients = max(opts.Clients, 0)
	sn := subnetOr(t, opts.Subnet)
	c := &Consul{Subnet: sn, Dir: tempRoot(t, "consul")}

	var join []string
	for i := 1; i <= opts.Servers; i++ {
		join = append(join, fmt.Sprintf("%q", sn.IP(i)))
	}
	agent := func(name, ip, extra string) *Proc {
		dir := filepath.Join(c.Dir, name)
		data := filepath.Join(dir, "data")
		cfg := filepath.Join(dir, "agent.hcl")
		writeConfig(t, cfg, fmt.Sprintf(`node_name = %q
datacenter = "dc1"
data_dir = %q
bind_addr = %q
advertise_addr = %q
client_addr = %q
retry_join = [%s]
retry_interval = "1s"
disable_update_check = true
log_level = "INFO"
# A client agent would otherwise spend seconds leaving the cluster on SIGTERM.
leave_on_terminate = false
performance { raft_multiplier = 1 }
%s
`, name, data, ip, ip, ip, strings.Join(join, ", "), extra))
		c.DataDirs = append(c.DataDirs, data)
		c.HTTPAddrs = append(c.HTTPAddrs, "http://"+ip+":8500")
		return Start(t, name, bin, []string{"agent", "-config-file=" + cfg}, dir)
	}
	acl := ""
	if opts.ACL {
		acl = `acl {
  enabled = true
  default_policy = "deny"
  enable_token_persistence = true
}`
	}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for i := 1; i <= opts.Servers; i++ {
		c.Servers = append(c.Servers, agent(fmt.Sprintf("consul-s%d", i), sn.IP(i),
			fmt.Sprintf("server = true\nbootstrap_expect = %d\n%s", opts.Servers, acl)))
	}
	clients := make([]*consulapi.Client, opts.Servers)
	for i := range clients {
		clients[i] = consulClient(t, c.HTTPAddrs[i], "")
	}
	c.Client = clients[0]

	var leader string
	err := waitFor(ctx, "consul: wait for a leader all servers agree on", func(ctx context.Context) error {
		if err := exited(c.Servers...); err != nil {
			return err
		}
		leader = ""
		for i, cl := range clients {
			l, err := cl.Status().LeaderWithQueryOptions((&consulapi.QueryOptions{}).WithContext(ctx))
			if err != nil {
				return fmt.Errorf("%s: %w", c.Servers[i].Name, err)
			}
			if l == "" || (leader != "" && l != leader) {
				return fmt.Errorf("%s: leader %q, others %q", c.Servers[i].Name, l, leader)
			}
			leader = l
		}
		return nil
	})
	if err != nil {
		fatal(t, c.Servers, "testcluster: %v", err)
	}

	clientACL := ""
	if opts.ACL {
		err := waitFor(ctx, "consul: ACL bootstrap", func(ctx context.Context) error {
			tok, _, err := c.Client.ACL().Bootstrap()
			if err != nil {
				if strings.Contains(err.Error(), "no longer allowed") {
					return permanent{err}
				}
				return err
			}
			c.Token = tok.SecretID
			return nil
		})
		if err != nil {
			fatal(t, c.Servers, "testcluster: %v", err)
		}
		for i := range clients {
			clients[i] = consulClient(t, c.HTTPAddrs[i], c.Token)
			c.Servers[i].Redact(c.Token)
		}
		c.Client = clients[0]
		// Servers register their own node with the agent token; without
		// one, default_policy = "deny" blocks it. A follower knows the
		// new token only once it has replicated it: retry.
		for i, cl := range clients {
			err := waitFor(ctx, "consul: set the agent token of "+c.Servers[i].Name, func(ctx context.Context) error {
				_, err := cl.Agent().UpdateAgentACLToken(c.Token, (&consulapi.WriteOptions{}).WithContext(ctx))
				return err
			})
			if err != nil {
				fatal(t, c.Servers, "testcluster: %v", err)
			}
		}
		clientACL = fmt.Sprintf(`acl {
  enabled = true
  default_policy = "deny"
  enable_token_persistence = true
  tokens { agent = %q }
}`, c.Token)
	}

	for j := 1; j <= opts.Clients; j++ {
		p := agent(fmt.Sprintf("consul-c%d", j), sn.IP(opts.Servers+j), clientACL)
		p.Redact(c.Token)
		c.Clients = append(c.Clients, p)
	}

	all := append(append([]*Proc(nil), c.Servers...), c.Clients...)
	err = waitFor(ctx, "consul: wait for every agent in the catalog", func(ctx context.Context) error {
		if err := exited(all...); err != nil {
			return err
		}
		nodes, _, err := c.Client.Catalog().Nodes((&consulapi.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		have := map[string]bool{}
		for _, n := range nodes {
			have[n.Node] = true
		}
		for _, p := range all {
			if !have[p.Name] {
				return fmt.Errorf("%s is not in the catalog yet", p.Name)
			}
		}
		return nil
	})
	if err != nil {
		fatal(t, all, "testcluster: %v", err)
	}
	return c
}

// Leader returns the raft address (IP:8300) of the current leader, as
// reported by the first running server that knows one; it waits for an
// election in progress to end.
func (c *Consul) Leader(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	clients := make([]*consulapi.Client, len(c.Servers))
	for i := range clients {
		clients[i] = consulClient(t, c.HTTPAddrs[i], c.Token)
	}
	var leader string
	err := waitFor(ctx, "consul: wait for a leader", func(ctx context.Context) error {
		var errs []string
		for i, p := range c.Servers {
			if !p.Running() {
				continue
			}
			l, err := clients[i].Status().LeaderWithQueryOptions((&consulapi.QueryOptions{}).WithContext(ctx))
			if err == nil && l != "" {
				leader = l
				return nil
			}
			errs = append(errs, fmt.Sprintf("%s: %q %v", p.Name, l, err))
		}
		return fmt.Errorf("no running server knows a leader: %s", strings.Join(errs, "; "))
	})
	if err != nil {
		fatal(t, c.Servers, "testcluster: %v", err)
	}
	return leader
}

// consulClient returns a client for one agent.
func consulClient(t testing.TB, addr, token string) *consulapi.Client {
	t.Helper()
	cl, err := consulapi.NewClient(&consulapi.Config{Address: addr, Token: token})
	if err != nil {
		t.Fatalf("testcluster: consul client for %s: %v", addr, err)
	}
	return cl
}
