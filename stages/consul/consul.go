// Package consul is the stage that runs Consul: consul-template daemons that
// keep every agent's certificate issued from the Vault PKI, Consul servers
// and clients with verified mutual TLS and gossip encryption, then a
// crash-safe ACL bootstrap and the platform's least-privilege tokens.
package consul

import (
	"context"
	"crypto/tls"
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
	"github.com/platform-bootstrap/bootstrap/internal/apitls"
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

// OutTLSServerName records the name the servers' certificates carry
// (server.<datacenter>.<domain>), for `bootstrap env`
// (CONSUL_TLS_SERVER_NAME).
const OutTLSServerName = "consul_tls_server_name"

// ServerName is the name in the certificates of the Consul servers of e's
// datacenter. Clients verify it rather than the address they dial: the PKI
// issues any IP address to client nodes too, never this name.
func ServerName(e *stages.Env) string {
	return apitls.ConsulServerName(e.Config.Datacenter, e.Config.Consul.Domain)
}

// TLSName is the name n's agent must present: a server's name for server
// nodes, the client agents' name (client.<datacenter>.<domain>) otherwise.
func TLSName(e *stages.Env, n inventory.Node) string {
	if n.Has(inventory.RoleServer) {
		return ServerName(e)
	}
	return apitls.ConsulClientName(e.Config.Datacenter, e.Config.Consul.Domain)
}

// Client returns a Consul API client for one agent, verifying the name of
// its role (TLSName).
func Client(e *stages.Env, n inventory.Node, token string) (*consulapi.Client, error) {
	return NewClientFor(Addr(n), CAFile(e), TLSName(e, n), token)
}

// NewClient returns an HTTPS Consul client for a server's address (host:port)
// that trusts caFile. The certificate must name a Consul server, so a client
// node's certificate is refused even when it carries the dialled address;
// NewClientFor checks the exact name. It does not read CONSUL_* variables:
// bootstrap talks to its own cluster only.
func NewClient(addr, caFile, token string) (*consulapi.Client, error) {
	tc, err := apitls.Config(caFile, "")
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", addr, err)
	}
	apitls.RequireServer(tc)
	return newClient(addr, tc, token)
}

// NewClientFor returns an HTTPS Consul client for addr that accepts only a
// certificate valid for serverName (see ServerName and TLSName).
func NewClientFor(addr, caFile, serverName, token string) (*consulapi.Client, error) {
	if serverName == "" {
		return nil, fmt.Errorf("consul client for %s: no TLS server name", addr)
	}
	tc, err := apitls.Config(caFile, serverName)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", addr, err)
	}
	return newClient(addr, tc, token)
}

func newClient(addr string, tc *tls.Config, token string) (*consulapi.Client, error) {
	tr := &http.Transport{
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 5 * time.Second,
		DisableKeepAlives:   true,
	}
	// The api package's own TLSConfig is not used: with HttpClient set it
	// is ignored, and it cannot require a server's name.
	c, err := consulapi.NewClient(&consulapi.Config{
		Address:    addr,
		Scheme:     "https",
		Token:      token,
		HttpClient: &http.Client{Transport: tr, Timeout: 15 * time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", addr, err)
	}
	return c, nil
}

// TemplateTokensVar is the secret Ansible variable holding every node's
// consul-template token: a JSON object, node name → token, from which the
// consul_template role takes its node's own. The consul and nomad plays
// both run that role.
const TemplateTokensVar = "consul_template_tokens"

// TemplateTokens returns the value of TemplateTokensVar for the nodes of
// inv. The pki stage makes the tokens; until it has, it is not ready.
func TemplateTokens(e *stages.Env, inv *inventory.Inventory) (string, error) {
	tokens, missing, err := pki.TemplateTokensJSON(e, pki.ConsulTemplateNodes(inv))
	if err != nil {
		return "", err
	}
	if missing != "" {
		return "", stages.NotReadyf("the consul-template token of node %s does not exist yet (pki stage)", missing)
	}
	return tokens, nil
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
		"consul_gossip_key": stages.SecretConsulGossipKey,
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
	tokens, err := TemplateTokens(e, inv)
	if err != nil {
		return nil, err
	}
	secrets[TemplateTokensVar] = tokens
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
	if e.State.Output(OutTLSServerName) != ServerName(e) {
		out = append(out, stages.Change{Action: "record", Target: "output " + OutTLSServerName, Detail: ServerName(e)})
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
	if err := e.State.SetOutput(OutTLSServerName, ServerName(e)); err != nil {
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
