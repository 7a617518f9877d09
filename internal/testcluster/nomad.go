package testcluster

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	nomadapi "github.com/hashicorp/nomad/api"
)

// NomadOptions shape a Nomad cluster. The zero value is three servers and
// one client, without ACLs and without Consul.
type NomadOptions struct {
	Servers int  // default 3
	Clients int  // default 1; negative for none
	ACL     bool // enable ACLs and bootstrap them (Token)
	// Consul, if set, is used by every agent: the Consul agent on the same
	// IP when there is one, else the first Consul server; with its token.
	Consul *Consul
	// Subnet defaults to Consul's subnet (so that Nomad server i and
	// Consul server i share an IP, like on a real node), else a fresh one.
	Subnet *Subnet
}

// Nomad is a running Nomad cluster: server i (1-based) on Subnet.IP(i),
// client j on Subnet.IP(Servers+j), standard ports, plain HTTP. Clients run
// raw_exec, each with its own dynamic port range and node meta
// "node_address" set to its IP.
type Nomad struct {
	Servers, Clients []*Proc
	HTTPAddrs        []string // http://IP:4646 of the servers, then of the clients
	Token            string   // with ACL: the bootstrap (management) token
	// Client talks to the first client agent when there is one (it
	// forwards to whichever server leads, so it keeps working when a
	// server is killed), else to the first server.
	Client   *nomadapi.Client
	Subnet   Subnet
	DataDirs []string // servers', then clients'
	Dir      string   // all files of the cluster; removed when the test ends
}

// cloudFingerprinters are denied on clients: AWS_CA_BUNDLE is set on some
// machines, the env_aws fingerprinter then fails and the agent exits; and
// none of them can succeed without internet anyway.
const cloudFingerprinters = "env_aws,env_gce,env_azure,env_digitalocean"

// StartNomad starts a Nomad cluster and waits until all servers agree on a
// leader and every client is ready with a healthy raw_exec driver. With
// ACL, it bootstraps the ACL system (Token).
//
// When the test ends, each client is stopped and then every process left
// under its directory (raw_exec tasks, `nomad executor` and `nomad logmon`,
// which outlive their client) is terminated by pid.
func StartNomad(t testing.TB, opts NomadOptions) *Nomad {
	t.Helper()
	if opts.Servers <= 0 {
		opts.Servers = 3
	}
	switch {
	case opts.Clients == 0:
		opts.Clients = 1
	case opts.Clients < 0:
		opts.Clients = 0
	}
	a := newAgents(t, "nomad", "4646", "-config=")
	if opts.Subnet == nil && opts.Consul != nil {
		opts.Subnet = &opts.Consul.Subnet
	}
	sn := subnetOr(t, opts.Subnet)

	var serverRPC, serverSerf []string
	for i := 1; i <= opts.Servers; i++ {
		serverRPC = append(serverRPC, fmt.Sprintf("%q", sn.IP(i)+":4647"))
		serverSerf = append(serverSerf, fmt.Sprintf("%q", sn.IP(i)+":4648"))
	}
	common := func(ip string) string {
		s := ""
		if opts.ACL {
			s += "acl {\n  enabled = true\n}\n"
		}
		if opts.Consul == nil {
			// Nomad always talks to a Consul agent; point it at a port
			// where nothing listens and turn the integrations off.
			return s + `consul {
  address = "127.0.0.1:1"
  auto_advertise = false
  server_auto_join = false
  client_auto_join = false
}
`
		}
		addr := strings.TrimPrefix(opts.Consul.HTTPAddrs[0], "http://")
		for _, a := range opts.Consul.HTTPAddrs {
			if strings.TrimPrefix(a, "http://") == ip+":8500" {
				addr = ip + ":8500"
			}
		}
		return s + fmt.Sprintf("consul {\n  address = %q\n  token = %q\n}\n", addr, opts.Consul.Token)
	}
	agent := func(name, ip, role string) *Proc {
		p := a.start(name, ip, fmt.Sprintf(`name = %q
datacenter = "dc1"
data_dir = %q
bind_addr = %q
advertise {
  http = %q
  rpc = %q
  serf = %q
}
disable_update_check = true
log_level = "INFO"
%s%s`, name, a.dataDir(name), ip, ip, ip, ip, role, common(ip)))
		if opts.Consul != nil {
			p.Redact(opts.Consul.Token)
		}
		return p
	}

	for i := 1; i <= opts.Servers; i++ {
		a.servers = append(a.servers, agent(fmt.Sprintf("nomad-s%d", i), sn.IP(i), fmt.Sprintf(`server {
  enabled = true
  bootstrap_expect = %d
  server_join {
    retry_join = [%s]
    retry_interval = "1s"
  }
}
`, opts.Servers, strings.Join(serverSerf, ", "))))
	}
	servers := clientsFor(t, a.httpAddrs, nomadClient, "")
	a.waitLeader(func(ctx context.Context, i int) (string, error) { return nomadLeader(ctx, servers[i]) })

	var token string
	if opts.ACL {
		token = a.bootstrapACL("bootstrap already done", func(ctx context.Context) (string, error) {
			tok, _, err := servers[0].ACLTokens().Bootstrap((&nomadapi.WriteOptions{}).WithContext(ctx))
			if err != nil {
				return "", err
			}
			return tok.SecretID, nil
		})
		for _, cl := range servers {
			cl.SetSecretID(token)
		}
	}

	// A client that registers before the new leader has made its root key
	// is refused ("keyring has not been initialized yet") and only retries
	// after up to 30 s: start the clients once every server has the key.
	a.wait("wait for the root key on every server", a.servers, func(ctx context.Context) error {
		for i, cl := range servers {
			keys, _, err := cl.Keyring().List((&nomadapi.QueryOptions{AllowStale: true}).WithContext(ctx))
			if err != nil {
				return fmt.Errorf("%s: %w", a.servers[i].Name, err)
			}
			if !slices.ContainsFunc(keys, func(k *nomadapi.RootKeyMeta) bool { return k.State == nomadapi.RootKeyStateActive }) {
				return fmt.Errorf("%s: no active root key yet", a.servers[i].Name)
			}
		}
		return nil
	})

	for j := 1; j <= opts.Clients; j++ {
		name := fmt.Sprintf("nomad-c%d", j)
		ip := sn.IP(opts.Servers + j)
		lo, hi := portBlock(t)
		// Registered before the client starts, so it runs after the
		// client has been stopped.
		dir := filepath.Join(a.dir, name)
		t.Cleanup(func() { stopLeftovers(t, dir) })
		p := agent(name, ip, fmt.Sprintf(`client {
  enabled = true
  servers = [%s]
  network_interface = "lo"
  min_dynamic_port = %d
  max_dynamic_port = %d
  options {
    "fingerprint.denylist" = %q
    # No Docker here: spare the log its connection errors.
    "driver.denylist" = "docker"
  }
  meta {
    node_address = %q
  }
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
`, strings.Join(serverRPC, ", "), lo, hi, cloudFingerprinters, ip))
		p.Redact(token)
		a.clients = append(a.clients, p)
	}
	client := servers[0]
	if opts.Clients > 0 {
		client = nomadClient(t, a.httpAddrs[opts.Servers], token)
		a.waitListed("ready with a healthy raw_exec driver", a.clients, func(ctx context.Context) (map[string]bool, error) {
			nodes, _, err := client.Nodes().List((&nomadapi.QueryOptions{}).WithContext(ctx))
			ready := map[string]bool{}
			for _, node := range nodes {
				if d := node.Drivers["raw_exec"]; node.Status == nomadapi.NodeStatusReady && d != nil && d.Healthy {
					ready[node.Name] = true
				}
			}
			return ready, err
		})
	}
	return &Nomad{Servers: a.servers, Clients: a.clients, HTTPAddrs: a.httpAddrs, Token: token,
		Client: client, Subnet: sn, DataDirs: a.dataDirs, Dir: a.dir}
}

// Leader returns the RPC address (IP:4647) of the current leader, as
// reported by the first running server that knows one; it waits for an
// election in progress to end.
func (n *Nomad) Leader(t testing.TB) string {
	t.Helper()
	servers := clientsFor(t, n.HTTPAddrs[:len(n.Servers)], nomadClient, n.Token)
	return anyLeader(t, "nomad", n.Servers, func(ctx context.Context, i int) (string, error) { return nomadLeader(ctx, servers[i]) })
}

// nomadLeader is Status().Leader() with a context.
func nomadLeader(ctx context.Context, c *nomadapi.Client) (string, error) {
	var leader string
	_, err := c.Raw().Query("/v1/status/leader", &leader, (&nomadapi.QueryOptions{}).WithContext(ctx))
	return leader, err
}

// nomadClient returns a client for one agent.
func nomadClient(t testing.TB, addr, token string) *nomadapi.Client {
	t.Helper()
	c, err := nomadapi.NewClient(&nomadapi.Config{Address: addr, SecretID: token})
	if err != nil {
		t.Fatalf("testcluster: nomad client for %s: %v", addr, err)
	}
	return c
}
