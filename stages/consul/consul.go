// Package consul is the stage that runs Consul: consul-template daemons that
// keep every agent's certificate issued from the Vault PKI, Consul servers
// and clients with verified mutual TLS and gossip encryption, then a
// crash-safe ACL bootstrap and the platform's least-privilege tokens.
package consul

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/ansible"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/provision"
)

// HTTPSPort is Consul's API port on every node; plain HTTP is off.
const HTTPSPort = 8501

// Stage is the consul stage.
type Stage struct{}

// New returns the consul stage.
func New() *Stage { return &Stage{} }

// Name is "consul".
func (*Stage) Name() string { return "consul" }

// Addr is the HTTPS address of a node's Consul agent.
func Addr(n inventory.Node) string {
	return net.JoinHostPort(n.APIAddress(), fmt.Sprint(HTTPSPort))
}

// CAFile is the chain that verifies every Consul agent's certificate.
func CAFile(e *stages.Env) string { return pki.CAFile(e.StateDir, "consul") }

// Client returns a Consul API client for one agent.
func Client(e *stages.Env, n inventory.Node, token string) (*consulapi.Client, error) {
	return NewClient(Addr(n), CAFile(e), token)
}

// NewClient returns an HTTPS Consul client that trusts caFile. It does not
// read CONSUL_* variables: bootstrap talks to its own cluster only.
func NewClient(addr, caFile, token string) (*consulapi.Client, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("consul CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("consul CA %s holds no certificate", caFile)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 5 * time.Second,
		DisableKeepAlives:   true,
	}
	return consulapi.NewClient(&consulapi.Config{
		Address:    addr,
		Scheme:     "https",
		Token:      token,
		HttpClient: &http.Client{Transport: tr, Timeout: 15 * time.Second},
	})
}

type deps struct {
	inv   *inventory.Inventory
	vault *vaultapi.Client
	play  ansible.Play
}

// load gathers what the stage needs from earlier stages.
func load(ctx context.Context, e *stages.Env) (*deps, error) {
	inv, err := provision.Load(e)
	if err != nil {
		return nil, err
	}
	addr := e.State.Output(stages.OutVaultAddr)
	if addr == "" {
		return nil, stages.NotReadyf("vault is not up yet")
	}
	secrets := map[string]string{}
	for key, name := range map[string]string{
		"consul_gossip_key":            stages.SecretConsulGossipKey,
		"consul_template_server_token": stages.SecretConsulTemplateServerToken,
		"consul_template_client_token": stages.SecretConsulTemplateClientToken,
	} {
		v, ok, err := e.Secrets.Get(name)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, stages.NotReadyf("%s does not exist yet (keys and pki stages)", name)
		}
		secrets[key] = strings.TrimSpace(v)
	}
	if _, err := os.Stat(CAFile(e)); err != nil {
		return nil, stages.NotReadyf("the consul CA (%s) does not exist yet: the pki stage has not run", CAFile(e))
	}
	vc, err := pki.NewClient(addr, e.State.Output(stages.OutVaultCACert))
	if err != nil {
		return nil, err
	}
	return &deps{
		inv:   inv,
		vault: vc,
		play: ansible.Play{
			Tag:     "consul",
			Roles:   []string{"common", "consul_template", "consul"},
			Vars:    map[string]any{"vault_addr": addr, "consul_cert_ttl": e.Config.PKI.LeafTTL, "consul_dns": e.Config.Consul.DNS},
			Secrets: secrets,
		},
	}, nil
}

// agentState is what one node's Consul agent says about itself.
type agentState struct {
	node   inventory.Node
	leader string
	err    error
}

func probe(ctx context.Context, e *stages.Env, inv *inventory.Inventory) []agentState {
	out := make([]agentState, len(inv.Nodes))
	for i, n := range inv.Nodes {
		out[i].node = n
		c, err := Client(e, n, "")
		if err != nil {
			out[i].err = err
			continue
		}
		// status/leader answers without a token.
		out[i].leader, out[i].err = c.Status().LeaderWithQueryOptions((&consulapi.QueryOptions{}).WithContext(ctx))
	}
	return out
}

func (a agentState) up() bool { return a.err == nil }

func leaderOf(as []agentState) string {
	for _, a := range as {
		if a.up() && a.leader != "" {
			return a.leader
		}
	}
	return ""
}

// Plan compares the Ansible inputs, asks every agent whether it answers and
// the cluster for its ACL policies and tokens.
func (s *Stage) Plan(ctx context.Context, e *stages.Env) ([]stages.Change, error) {
	d, err := load(ctx, e)
	if err != nil {
		return nil, err
	}
	var out []stages.Change
	reason, err := ansible.Pending(e, d.inv, d.play)
	if err != nil {
		return nil, err
	}
	if reason != "" {
		out = append(out, stages.Change{Action: "install", Target: "consul on every node", Detail: reason})
	}
	as := probe(ctx, e, d.inv)
	for _, a := range as {
		if !a.up() {
			out = append(out, stages.Change{Action: "start", Target: "consul on " + a.node.Name, Detail: "not answering"})
		}
	}
	if leaderOf(as) == "" {
		if len(out) == 0 {
			out = append(out, stages.Change{Action: "wait", Target: "consul leader election"})
		}
		return append(out, stages.Change{Action: "bootstrap", Target: "consul ACLs, policies and tokens"}), nil
	}
	acl, err := s.planACL(ctx, e, d, as)
	if err != nil {
		return nil, err
	}
	return append(out, acl...), nil
}

// Apply converges the agents and the ACL system.
func (s *Stage) Apply(ctx context.Context, e *stages.Env) error {
	d, err := load(ctx, e)
	if err != nil {
		return err
	}
	reason, err := ansible.Pending(e, d.inv, d.play)
	if err != nil {
		return err
	}
	as := probe(ctx, e, d.inv)
	down := false
	for _, a := range as {
		down = down || !a.up()
	}
	if reason != "" || down {
		e.Step("installing consul-template and consul on %d node(s)", len(d.inv.Nodes))
		if err := ansible.Converge(ctx, e, d.inv, d.play); err != nil {
			return err
		}
	}
	servers := d.inv.WithRole(inventory.RoleServer)
	if err := e.State.SetOutput(stages.OutConsulAddr, "https://"+Addr(servers[0])); err != nil {
		return err
	}
	if err := e.State.SetOutput(stages.OutConsulCACert, CAFile(e)); err != nil {
		return err
	}
	if err := waitLeader(ctx, e, d.inv); err != nil {
		return err
	}
	return s.applyACL(ctx, e, d)
}

// waitLeader waits until every agent answers and the servers agree on a
// leader.
func waitLeader(ctx context.Context, e *stages.Env, inv *inventory.Inventory) error {
	e.Step("waiting for the consul leader")
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		as := probe(ctx, e, inv)
		var down []string
		for _, a := range as {
			if !a.up() {
				down = append(down, a.node.Name)
			}
		}
		if len(down) == 0 && leaderOf(as) != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			if len(down) > 0 {
				return fmt.Errorf("consul does not answer on %s; see %s", strings.Join(down, ", "), logHint(inv, down[0]))
			}
			return fmt.Errorf("consul servers elected no leader; see %s", logHint(inv, inv.WithRole(inventory.RoleServer)[0].Name))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func logHint(inv *inventory.Inventory, node string) string {
	n, _ := inv.Node(node)
	if n.Local != nil {
		return n.Local.Root + "/logs/consul.log"
	}
	return "journalctl -u consul on " + node
}

// Status reports each agent, the leader and the raft voters.
func (s *Stage) Status(ctx context.Context, e *stages.Env) ([]stages.StatusLine, error) {
	inv, err := provision.Load(e)
	if err != nil {
		return nil, nil
	}
	if _, err := os.Stat(CAFile(e)); err != nil {
		return nil, nil
	}
	tok, _, _ := e.Secrets.Get(stages.SecretConsulBootstrapToken)
	var out []stages.StatusLine
	as := probe(ctx, e, inv)
	leader := leaderOf(as)
	var members map[string]string
	if leader != "" {
		members = map[string]string{}
		for _, a := range as {
			if !a.up() {
				continue
			}
			c, err := Client(e, a.node, tok)
			if err != nil {
				continue
			}
			ms, err := c.Agent().Members(false)
			if err != nil {
				continue
			}
			// serf member status: 1 alive, 2 leaving, 3 left, 4 failed.
			names := map[int]string{1: "alive", 2: "leaving", 3: "left", 4: "failed"}
			for _, m := range ms {
				members[m.Name] = names[m.Status]
			}
			break
		}
	}
	for _, a := range as {
		l := stages.StatusLine{Component: "consul", Node: a.node.Name}
		role := "client"
		if a.node.Has(inventory.RoleServer) {
			role = "server"
		}
		switch {
		case !a.up():
			l.State = "down"
		case leader != "" && strings.HasPrefix(leader, a.node.Address()+":"):
			l.State, l.Healthy = role+", leader", true
		default:
			l.State, l.Healthy = role, leader != ""
		}
		if st, ok := members[a.node.Name]; ok {
			l.Detail = "member " + st
			l.Healthy = l.Healthy && st == "alive"
		}
		out = append(out, l)
	}
	return out, nil
}

// ErrLockedOut means the cluster's ACLs were bootstrapped with a token
// bootstrap does not have.
var ErrLockedOut = errors.New("consul ACLs were bootstrapped outside bootstrap")
