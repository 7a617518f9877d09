// Package consul is the stage that runs Consul: consul-template daemons that
// keep every agent's certificate issued from the Vault PKI, Consul servers
// and clients with verified mutual TLS and gossip encryption, then a
// crash-safe ACL bootstrap and the platform's least-privilege tokens.
package consul

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	consulapi "github.com/hashicorp/consul/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/ansible"
	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Stage is the consul stage.
type Stage struct{}

// New returns the consul stage.
func New() *Stage { return &Stage{} }

// Name is "consul".
func (*Stage) Name() string { return "consul" }

// NewClient returns an HTTPS Consul client for a server's address
// (host:port) that trusts caFile. The certificate must name a Consul
// server, so a client node's certificate is refused even when it carries
// the dialled address; NewClientFor checks the exact name.
func NewClient(addr, caFile, token string) (*consulapi.Client, error) {
	return cluster.ConsulClient(addr, caFile, "", token)
}

// NewClientFor returns an HTTPS Consul client for addr that accepts only a
// certificate valid for serverName (see Env.ConsulTLSName).
func NewClientFor(addr, caFile, serverName, token string) (*consulapi.Client, error) {
	if serverName == "" {
		return nil, fmt.Errorf("consul client for %s: no TLS server name", addr)
	}
	return cluster.ConsulClient(addr, caFile, serverName, token)
}

type deps struct {
	inv   *inventory.Inventory
	vault *vaultapi.Client
	play  ansible.Play
}

// load gathers what the stage needs from earlier stages.
func load(ctx context.Context, e *stages.Env) (*deps, error) {
	inv, err := e.Inventory()
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
	tokens, err := pki.TemplateTokens(e, inv)
	if err != nil {
		return nil, err
	}
	caHash, err := cluster.CAHash(e.CAFile("consul"))
	if err != nil {
		return nil, stages.NotReadyf("the consul CA (%s) does not exist yet: the pki stage has not run", e.CAFile("consul"))
	}
	vc, err := pki.NewClient(addr, e.State.Output(stages.OutVaultCACert))
	if err != nil {
		return nil, err
	}
	vars, serverVars := ansible.ConsulVars(e.Config)
	vars["vault_addr"], vars["consul_cert_ttl"], vars["ct_ca_hash"] = addr, e.Config.PKI.LeafTTL, caHash
	return &deps{
		inv:   inv,
		vault: vc,
		play: ansible.Play{
			Tag:         "consul",
			Roles:       []string{"common", "consul_template", "consul"},
			Vars:        vars,
			ServerVars:  serverVars,
			Hosts:       inventory.Names(pki.ConsulTemplateNodes(inv)),
			Secrets:     secrets,
			NodeSecrets: map[string]map[string]string{pki.TemplateTokensVar: tokens},
		},
	}, nil
}

// service asks each node's agent for the leader; status/leader answers
// without a token.
func service(e *stages.Env) cluster.Service {
	return cluster.Service{Name: "consul", Leader: func(ctx context.Context, n inventory.Node) (string, error) {
		c, err := cluster.ConsulAgent(e, n, "")
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
	return stages.WithKnown(p.Changes, err, func() []stages.Change { return knownChanges(e) })
}

// knownChanges is what a first run does, as far as the configuration tells
// before the nodes, Vault and the CA exist: shown while the stage waits.
func knownChanges(e *stages.Env) []stages.Change {
	out := []stages.Change{
		{Action: reconcile.Install, Target: "consul on " + stages.PlannedNodes(e.Config, "")},
		{Action: reconcile.Bootstrap, Target: "consul ACLs"},
	}
	for _, name := range slices.Sorted(maps.Keys(Policies(e.Config))) {
		out = append(out, stages.Change{Action: reconcile.Create, Target: "consul policy " + name})
	}
	for _, t := range wantTokens(e.Config, &inventory.Inventory{}) {
		out = append(out, stages.Change{Action: reconcile.Create, Target: "consul token " + t.name})
	}
	return append(out, stages.Change{Action: reconcile.Create, Target: "consul agent tokens on " + stages.PlannedNodes(e.Config, "")})
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
	pending, err := ansible.Pending(e, d.inv, d.play)
	if err != nil {
		return err
	}
	svc := service(e)
	as := svc.Probe(ctx, d.inv.Nodes)
	play := d.play
	play.Leader = as.LeaderNode()
	// None before the ACL bootstrap, when no server runs yet to restart.
	tok, _, err := e.Secrets.Get(stages.SecretConsulBootstrapToken)
	if err != nil {
		return err
	}
	play.LeaderToken = strings.TrimSpace(tok)
	if err := svc.Converge(p, pending, as, ansible.Run(ctx, e, d.inv, play)); err != nil {
		return err
	}
	servers := d.inv.WithRole(inventory.RoleServer)
	if err := cluster.RecordOutputs(p, e.State, map[string]string{
		stages.OutConsulAddr:          "https://" + stages.ConsulAddr(servers[0]),
		stages.OutConsulCACert:        e.CAFile("consul"),
		stages.OutConsulTLSServerName: e.ConsulServerName(),
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
		if _, ok := e.RestoreSnapshot("consul"); ok {
			p.Planned(reconcile.Restore, "consul", restoreDetail)
		}
		return nil
	}
	return convergeACL(ctx, e, d, as, p)
}

// Status reports each agent, the leader and the raft voters.
func (s *Stage) Status(ctx context.Context, e *stages.Env) ([]stages.StatusLine, error) {
	inv, err := e.Inventory()
	if err != nil {
		return nil, nil
	}
	if _, err := os.Stat(e.CAFile("consul")); err != nil {
		return nil, nil
	}
	tok, _, _ := e.Secrets.Get(stages.SecretConsulBootstrapToken)
	var out []stages.StatusLine
	svc := service(e)
	as := svc.Probe(ctx, inv.Nodes)
	leader := as.Leader()
	var members, versions map[string]string
	if leader != "" {
		members, versions = map[string]string{}, map[string]string{}
		for _, a := range as {
			if !a.Up() {
				continue
			}
			c, err := cluster.ConsulAgent(e, a.Node, tok)
			if err != nil {
				continue
			}
			ms, err := c.Agent().Members(false)
			if err != nil {
				continue
			}
			for _, m := range ms {
				members[m.Name] = memberStatus(m.Status)
				// "1.22.5:<revision>"
				versions[m.Name], _, _ = strings.Cut(m.Tags["build"], ":")
			}
			break
		}
	}
	for _, a := range as {
		l := svc.Status(a, leader)
		if st, ok := members[a.Node.Name]; ok {
			l.Detail = "member " + st
			if v := versions[a.Node.Name]; v != "" {
				l.Detail += ", v" + v
			}
			l.Healthy = l.Healthy && st == "alive"
		}
		out = append(out, l)
	}
	return out, nil
}

// ErrLockedOut means the cluster's ACLs were bootstrapped with a token
// bootstrap does not have.
var ErrLockedOut = errors.New("consul ACLs were bootstrapped outside bootstrap")

// waitCaughtUp waits until every server has caught up with the cluster
// (cluster.Service.WaitCaughtUp): a restarted server refuses the tokens it
// has not replayed yet with 403.
func waitCaughtUp(ctx context.Context, e *stages.Env, inv *inventory.Inventory, mgmt string) error {
	return service(e).WaitCaughtUp(ctx, inv, func(ctx context.Context, n inventory.Node) (uint64, uint64, error) {
		c, err := cluster.ConsulAgent(e, n, mgmt)
		if err != nil {
			return 0, 0, err
		}
		self, err := c.Agent().Self()
		if err != nil {
			return 0, 0, err
		}
		raft, _ := self["Stats"]["raft"].(map[string]any)
		index := func(k string) uint64 {
			s, _ := raft[k].(string)
			v, _ := strconv.ParseUint(s, 10, 64)
			return v
		}
		return index("applied_index"), index("commit_index"), nil
	})
}

// memberStatus names a serf member status as the Consul API numbers it.
func memberStatus(s int) string {
	return map[int]string{1: "alive", 2: "leaving", 3: "left", 4: "failed"}[s]
}
