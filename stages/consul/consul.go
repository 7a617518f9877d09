// Package consul is the stage that runs Consul: consul-template daemons that
// keep every agent's certificate issued from the Vault PKI, Consul servers
// and clients with verified mutual TLS and gossip encryption, then a
// crash-safe ACL bootstrap and the platform's least-privilege tokens.
package consul

import (
	"context"
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
	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
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
	return newClient(addr, caFile, "", token)
}

// NewClientFor returns an HTTPS Consul client for addr that accepts only a
// certificate valid for serverName (see ServerName and TLSName).
func NewClientFor(addr, caFile, serverName, token string) (*consulapi.Client, error) {
	if serverName == "" {
		return nil, fmt.Errorf("consul client for %s: no TLS server name", addr)
	}
	return newClient(addr, caFile, serverName, token)
}

func newClient(addr, caFile, serverName, token string) (*consulapi.Client, error) {
	tc, err := cluster.TLS(caFile, serverName)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", addr, err)
	}
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

// service asks each node's agent for the leader; status/leader answers
// without a token.
func service(e *stages.Env) cluster.Service {
	return cluster.Service{Name: "consul", Leader: func(ctx context.Context, n inventory.Node) (string, error) {
		c, err := Client(e, n, "")
		if err != nil {
			return "", err
		}
		return c.Status().LeaderWithQueryOptions((&consulapi.QueryOptions{}).WithContext(ctx))
	}}
}

// Plan compares the Ansible inputs, asks every agent whether it answers and
// the cluster for its ACL policies and tokens.
func (s *Stage) Plan(ctx context.Context, e *stages.Env) ([]stages.Change, error) {
	p := e.Plan(false)
	err := converge(ctx, e, p)
	return p.Changes, err
}

// Apply converges the agents and the ACL system.
func (s *Stage) Apply(ctx context.Context, e *stages.Env) error {
	return converge(ctx, e, e.Plan(true))
}

// converge records in p, and makes when p applies, what the agents and the
// ACL system lack.
func converge(ctx context.Context, e *stages.Env, p *reconcile.Plan) error {
	d, err := load(ctx, e)
	if err != nil {
		return err
	}
	reason, err := ansible.Pending(e, d.inv, d.play)
	if err != nil {
		return err
	}
	svc := service(e)
	as := svc.Probe(ctx, d.inv.Nodes)
	if err := svc.Converge(p, reason, as, func() error { return ansible.Converge(ctx, e, d.inv, d.play) }); err != nil {
		return err
	}
	servers := d.inv.WithRole(inventory.RoleServer)
	if err := cluster.RecordOutputs(p, e.State, map[string]string{
		stages.OutConsulAddr:   "https://" + Addr(servers[0]),
		stages.OutConsulCACert: CAFile(e),
		OutTLSServerName:       ServerName(e),
	}); err != nil {
		return err
	}
	if p.Apply {
		e.Step("waiting for the consul leader")
		if as, err = svc.WaitLeader(ctx, d.inv); err != nil {
			return err
		}
	} else if as.Leader() == "" {
		if len(p.Changes) == 0 {
			p.Planned(reconcile.Wait, "consul leader election", "")
		}
		p.Planned(reconcile.Bootstrap, "consul ACLs, policies and tokens", "")
		return nil
	}
	return convergeACL(ctx, e, d, as, p)
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
	svc := service(e)
	as := svc.Probe(ctx, inv.Nodes)
	leader := as.Leader()
	var members map[string]string
	if leader != "" {
		members = map[string]string{}
		for _, a := range as {
			if !a.Up() {
				continue
			}
			c, err := Client(e, a.Node, tok)
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
		l := svc.Status(a, leader)
		if st, ok := members[a.Node.Name]; ok {
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
