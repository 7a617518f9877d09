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
	bin := Bin(t, "nomad")
	if opts.Servers <= 0 {
		opts.Servers = 3
	}
	switch {
	case opts.Clients == 0:
		opts.Clients = 1
	case opts.Clients < 0:
		opts.Clients = 0
	}
	if opts.Subnet == nil && opts.Consul != nil {
		opts.Subnet = &opts.Consul.Subnet
	}
	sn := subnetOr(t, opts.Subnet)
	n := &Nomad{Subnet: sn, Dir: tempRoot(t, "nomad")}

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
		dir := filepath.Join(n.Dir, name)
		data := filepath.Join(dir, "data")
		cfg := filepath.Join(dir, "agent.hcl")
		writeConfig(t, cfg, fmt.Sprintf(`name = %q
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
%s%s`, name, data, ip, ip, ip, ip, role, common(ip)))
		n.DataDirs = append(n.DataDirs, data)
		n.HTTPAddrs = append(n.HTTPAddrs, "http://"+ip+":4646")
		p := Start(t, name, bin, []string{"agent", "-config=" + cfg}, dir)
		if opts.Consul != nil {
			p.Redact(opts.Consul.Token)
		}
		return p
	}

	for i := 1; i <= opts.Servers; i++ {
		n.Servers = append(n.Servers, agent(fmt.Sprintf("nomad-s%d", i), sn.IP(i), fmt.Sprintf(`server {
  enabled = true
  bootstrap_expect = %d
  server_join {
    retry_join = [%s]
    retry_interval = "1s"
  }
}
`, opts.Servers, strings.Join(serverSerf, ", "))))
	}
	servers := make([]*nomadapi.Client, opts.Servers)
	for i := range servers {
		servers[i] = nomadClient(t, n.HTTPAddrs[i], "")
	}
	n.Client = servers[0]

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	err := waitFor(ctx, "nomad: wait for a leader all servers agree on", func(ctx context.Context) error {
		if err := exited(n.Servers...); err != nil {
			return err
		}
		leader := ""
		for i, cl := range servers {
			l, err := nomadLeader(ctx, cl)
			if err != nil {
				return fmt.Errorf("%s: %w", n.Servers[i].Name, err)
			}
			if l == "" || (leader != "" && l != leader) {
				return fmt.Errorf("%s: leader %q, others %q", n.Servers[i].Name, l, leader)
			}
			leader = l
		}
		return nil
	})
	if err != nil {
		fatal(t, n.Servers, "testcluster: %v", err)
	}

	if opts.ACL {
		err := waitFor(ctx, "nomad: ACL bootstrap", func(ctx context.Context) error {
			tok, _, err := servers[0].ACLTokens().Bootstrap((&nomadapi.WriteOptions{}).WithContext(ctx))
			if err != nil {
				if strings.Contains(err.Error(), "bootstrap already done") {
					return permanent{err}
				}
				return err
			}
			n.Token = tok.SecretID
			return nil
		})
		if err != nil {
			fatal(t, n.Servers, "testcluster: %v", err)
		}
		for i, p := range n.Servers {
			p.Redact(n.Token)
			servers[i].SetSecretID(n.Token)
		}
	}

	// A client that registers before the new leader has made its root key
	// is refused ("keyring has not been initialized yet") and only retries
	// after up to 30 s: start the clients once every server has the key.
	err = waitFor(ctx, "nomad: wait for the root key on every server", func(ctx context.Context) error {
		if err := exited(n.Servers...); err != nil {
			return err
		}
		for i, cl := range servers {
			keys, _, err := cl.Keyring().List((&nomadapi.QueryOptions{AllowStale: true}).WithContext(ctx))
			if err != nil {
				return fmt.Errorf("%s: %w", n.Servers[i].Name, err)
			}
			if !slices.ContainsFunc(keys, func(k *nomadapi.RootKeyMeta) bool { return k.State == nomadapi.RootKeyStateActive }) {
				return fmt.Errorf("%s: no active root key yet", n.Servers[i].Name)
			}
		}
		return nil
	})
	if err != nil {
		fatal(t, n.Servers, "testcluster: %v", err)
	}

	for j := 1; j <= opts.Clients; j++ {
		name := fmt.Sprintf("nomad-c%d", j)
		ip := sn.IP(opts.Servers + j)
		lo, hi := portBlock(t)
		// Registered before the client starts, so it runs after the
		// client has been stopped.
		dir := filepath.Join(n.Dir, name)
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
		p.Redact(n.Token)
		n.Clients = append(n.Clients, p)
	}
	if opts.Clients == 0 {
		return n
	}
	n.Client = nomadClient(t, n.HTTPAddrs[opts.Servers], n.Token)
	all := append(append([]*Proc(nil), n.Servers...), n.Clients...)
	err = waitFor(ctx, "nomad: wait for every client ready with raw_exec", func(ctx context.Context) error {
		if err := exited(all...); err != nil {
			return err
		}
		nodes, _, err := n.Client.Nodes().List((&nomadapi.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		ready := map[string]bool{}
		for _, node := range nodes {
			if d := node.Drivers["raw_exec"]; node.Status == nomadapi.NodeStatusReady && d != nil && d.Healthy {
				ready[node.Name] = true
			}
		}
		for _, p := range n.Clients {
			if !ready[p.Name] {
				return fmt.Errorf("%s is not ready with a healthy raw_exec driver yet", p.Name)
			}
		}
		return nil
	})
	if err != nil {
		fatal(t, all, "testcluster: %v", err)
	}
	return n
}

// Leader returns the RPC address (IP:4647) of the current leader, as
// reported by the first running server that knows one; it waits for an
// election in progress to end.
func (n *Nomad) Leader(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	clients := make([]*nomadapi.Client, len(n.Servers))
	for i := range clients {
		clients[i] = nomadClient(t, n.HTTPAddrs[i], n.Token)
	}
	var leader string
	err := waitFor(ctx, "nomad: wait for a leader", func(ctx context.Context) error {
		var errs []string
		for i, p := range n.Servers {
			if !p.Running() {
				continue
			}
			l, err := nomadLeader(ctx, clients[i])
			if err == nil && l != "" {
				leader = l
				return nil
			}
			errs = append(errs, fmt.Sprintf("%s: %q %v", p.Name, l, err))
		}
		return fmt.Errorf("no running server knows a leader: %s", strings.Join(errs, "; "))
	})
	if err != nil {
		fatal(t, n.Servers, "testcluster: %v", err)
	}
	return leader
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
