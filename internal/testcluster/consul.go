package testcluster

import (
	"context"
	"fmt"
	"slices"
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
	if opts.Servers <= 0 {
		opts.Servers = 3
	}
	opts.Clients = max(opts.Clients, 0)
	a := newAgents(t, "consul", "8500", "-config-file=")
	sn := subnetOr(t, opts.Subnet)

	var join []string
	for i := 1; i <= opts.Servers; i++ {
		join = append(join, fmt.Sprintf("%q", sn.IP(i)))
	}
	agent := func(name, ip, extra string) *Proc {
		return a.start(name, ip, fmt.Sprintf(`node_name = %q
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
`, name, a.dataDir(name), ip, ip, ip, strings.Join(join, ", "), extra))
	}
	acl := ""
	if opts.ACL {
		acl = `acl {
  enabled = true
  default_policy = "deny"
  enable_token_persistence = true
}`
	}

	for i := 1; i <= opts.Servers; i++ {
		a.servers = append(a.servers, agent(fmt.Sprintf("consul-s%d", i), sn.IP(i),
			fmt.Sprintf("server = true\nbootstrap_expect = %d\n%s", opts.Servers, acl)))
	}
	clients := clientsFor(t, a.httpAddrs, consulClient, "")
	a.waitLeader(consulLeader(clients))

	var token, clientACL string
	if opts.ACL {
		token = a.bootstrapACL("no longer allowed", func(context.Context) (string, error) {
			tok, _, err := clients[0].ACL().Bootstrap()
			if err != nil {
				return "", err
			}
			return tok.SecretID, nil
		})
		clients = clientsFor(t, a.httpAddrs, consulClient, token)
		// Servers register their own node with the agent token; without
		// one, default_policy = "deny" blocks it. A follower knows the
		// new token only once it has replicated it: retry.
		for i, cl := range clients {
			a.wait("set the agent token of "+a.servers[i].Name, a.servers, func(ctx context.Context) error {
				_, err := cl.Agent().UpdateAgentACLToken(token, (&consulapi.WriteOptions{}).WithContext(ctx))
				return err
			})
		}
		clientACL = fmt.Sprintf(`acl {
  enabled = true
  default_policy = "deny"
  enable_token_persistence = true
  tokens { agent = %q }
}`, token)
	}

	for j := 1; j <= opts.Clients; j++ {
		p := agent(fmt.Sprintf("consul-c%d", j), sn.IP(opts.Servers+j), clientACL)
		p.Redact(token)
		a.clients = append(a.clients, p)
	}
	a.waitListed("in the catalog", slices.Concat(a.servers, a.clients), func(ctx context.Context) (map[string]bool, error) {
		nodes, _, err := clients[0].Catalog().Nodes((&consulapi.QueryOptions{}).WithContext(ctx))
		have := map[string]bool{}
		for _, n := range nodes {
			have[n.Node] = true
		}
		return have, err
	})
	return &Consul{Servers: a.servers, Clients: a.clients, HTTPAddrs: a.httpAddrs, Token: token,
		Client: clients[0], Subnet: sn, DataDirs: a.dataDirs, Dir: a.dir}
}

// Leader returns the raft address (IP:8300) of the current leader, as
// reported by the first running server that knows one; it waits for an
// election in progress to end.
func (c *Consul) Leader(t testing.TB) string {
	t.Helper()
	return anyLeader(t, "consul", c.Servers, consulLeader(clientsFor(t, c.HTTPAddrs[:len(c.Servers)], consulClient, c.Token)))
}

// consulLeader asks clients[i] for the leader.
func consulLeader(clients []*consulapi.Client) func(context.Context, int) (string, error) {
	return func(ctx context.Context, i int) (string, error) {
		return clients[i].Status().LeaderWithQueryOptions((&consulapi.QueryOptions{}).WithContext(ctx))
	}
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
