package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/parallel"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/consul"
)

// consulToken is one token of the consul stage: a policy, or a node
// identity for an agent.
type consulToken struct {
	name, policy, node string
}

func consulTokens(cfg *config.Platform, inv *inventory.Inventory) []consulToken {
	ts := []consulToken{{"nomad-agent", "nomad-agent", ""}, {"prometheus", "prometheus", ""}, {"fabio", "fabio", ""},
		{"operator-read", "operator-read", ""}, {"dns", "dns", ""}}
	for _, ns := range cfg.Nomad.Namespaces {
		ts = append(ts, consulToken{stages.ConsulFabioPolicy(ns), stages.ConsulFabioPolicy(ns), ""})
	}
	for _, n := range inv.Nodes {
		ts = append(ts, consulToken{"agent-" + n.Name, "", n.Name})
	}
	return ts
}

// consul is the consul stage's work: every agent started at once, a
// leader, the ACL bootstrap with a token stored first, the policies and
// tokens, each agent's own token and the DNS token, and the tokens'
// copies in Vault KV. The agents' certificates are issued first.
func (p *platform) consul(ctx context.Context) error {
	if err := p.certs(ctx); err != nil {
		return err
	}
	gossip, _, err := p.e.Secrets.Get(stages.SecretConsulGossipKey)
	if err != nil {
		return err
	}
	if err := p.startAgents("consul", p.inv.Nodes, func(n inventory.Node) string { return p.consulConfig(n, strings.TrimSpace(gossip)) }); err != nil {
		return err
	}
	servers := p.inv.WithRole(inventory.RoleServer)
	for k, v := range map[string]string{
		stages.OutConsulAddr:          "https://" + stages.ConsulAddr(servers[0]),
		stages.OutConsulCACert:        p.e.CAFile("consul"),
		stages.OutConsulTLSServerName: p.e.ConsulServerName(),
	} {
		if err := p.e.State.SetOutput(k, v); err != nil {
			return err
		}
	}
	agent := func(n inventory.Node, token string) (*consulapi.Client, error) {
		return cluster.ConsulAgent(p.e, n, token)
	}
	if err := p.waitLeader(ctx, p.inv.Nodes, func(ctx context.Context, n inventory.Node) (string, error) {
		c, err := agent(n, "")
		if err != nil {
			return "", err
		}
		return c.Status().LeaderWithQueryOptions((&consulapi.QueryOptions{}).WithContext(ctx))
	}); err != nil {
		return fmt.Errorf("leader: %w", err)
	}

	mgmt, _, err := p.e.Secrets.GetOrCreate(stages.SecretConsulBootstrapToken, secrets.NewUUID)
	if err != nil {
		return err
	}
	p.consulMgmt = mgmt
	c, err := agent(servers[0], mgmt)
	if err != nil {
		return err
	}
	if err := poll(ctx, 100*time.Millisecond, func() error {
		_, _, err := c.ACL().BootstrapWithToken(mgmt)
		return err
	}); err != nil {
		return fmt.Errorf("ACL bootstrap: %w", err)
	}
	w := (&consulapi.WriteOptions{}).WithContext(ctx)
	var creates []func() error
	for name, rules := range consul.Policies(p.e.Config) {
		creates = append(creates, func() error {
			_, _, err := c.ACL().PolicyCreate(&consulapi.ACLPolicy{Name: name, Description: "bootstrap", Rules: rules}, w)
			return err
		})
	}
	if err := parallel.Do(creates...); err != nil {
		return fmt.Errorf("policies: %w", err)
	}
	vc, err := p.vaultClient(ctx)
	if err != nil {
		return err
	}
	creates = creates[:0]
	for _, t := range consulTokens(p.e.Config, p.inv) {
		creates = append(creates, func() error {
			secret, _, err := p.e.Secrets.GetOrCreate("consul/tokens/"+t.name, secrets.NewUUID)
			if err != nil {
				return err
			}
			tok := &consulapi.ACLToken{Description: "bootstrap: " + t.name, SecretID: secret}
			if t.policy != "" {
				tok.Policies = []*consulapi.ACLTokenPolicyLink{{Name: t.policy}}
			}
			if t.node != "" {
				tok.NodeIdentities = []*consulapi.ACLNodeIdentity{{NodeName: t.node, Datacenter: p.e.Config.Datacenter}}
			}
			if _, _, err := c.ACL().TokenCreate(tok, w); err != nil {
				return fmt.Errorf("token %s: %w", t.name, err)
			}
			return pki.StoreKV(ctx, vc, "consul/tokens/"+t.name, secret)
		})
	}
	creates = append(creates, func() error { return pki.StoreKV(ctx, vc, stages.SecretConsulBootstrapToken, mgmt) })
	if err := parallel.Do(creates...); err != nil {
		return err
	}
	dns, _, err := p.e.Secrets.Get("consul/tokens/dns")
	if err != nil {
		return err
	}
	var sets []func() error
	for _, n := range p.inv.Nodes {
		sets = append(sets, func() error {
			tok, _, err := p.e.Secrets.Get("consul/tokens/agent-" + n.Name)
			if err != nil {
				return err
			}
			a, err := agent(n, mgmt)
			if err != nil {
				return err
			}
			// A follower knows a new token once it has replicated it.
			return poll(ctx, 100*time.Millisecond, func() error {
				if _, err := a.Agent().UpdateAgentACLToken(tok, w); err != nil {
					return fmt.Errorf("agent token on %s: %w", n.Name, err)
				}
				if _, err := a.Agent().UpdateDNSToken(dns, w); err != nil {
					return fmt.Errorf("DNS token on %s: %w", n.Name, err)
				}
				return nil
			})
		})
	}
	return parallel.Do(sets...)
}
