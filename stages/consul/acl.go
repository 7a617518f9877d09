package consul

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Policies returns the ACL policies the platform needs, least privilege
// each. tools/floor creates the same ones by hand.
func Policies(cfg *config.Platform) map[string]string {
	// The platform's Fabio routes the platform's services only: the
	// application namespaces' services ("<namespace>-…", which Consul's
	// binding rules enforce) are hidden from it, so no application can
	// claim /grafana or another platform route there.
	var hide strings.Builder
	for _, ns := range cfg.Nomad.Namespaces {
		fmt.Fprintf(&hide, "service_prefix %q { policy = \"deny\" }\n", ns+"-")
	}
	out := map[string]string{
		// Nomad agents register their own services and read the catalog.
		// Jobs' services are registered with the token each service gets
		// from its workload identity (see the nomad stage).
		"nomad-agent": `agent_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
service_prefix "" { policy = "write" }
`,
		// Prometheus discovers services (consul_sd) and scrapes agent metrics.
		"prometheus": `agent_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
service_prefix "" { policy = "read" }
`,
		// Fabio builds its routes from the services' urlprefix- tags and health.
		"fabio": `node_prefix "" { policy = "read" }
service_prefix "" { policy = "read" }
agent_prefix "" { policy = "read" }
` + hide.String(),
		// People looking at the Consul UI.
		"operator-read": `operator = "read"
acl = "read"
agent_prefix "" { policy = "read" }
node_prefix "" { policy = "read" }
service_prefix "" { policy = "read" }
key_prefix "" { policy = "read" }
session_prefix "" { policy = "read" }
`,
		// DNS lookups of .consul names (the agents' dns token; HTTP requests
		// without a token stay denied).
		"dns": `node_prefix "" { policy = "read" }
service_prefix "" { policy = "read" }
query_prefix "" { policy = "read" }
`,
	}
	// Each application namespace has a Fabio of its own that sees only that
	// namespace's services: routes cannot cross namespaces.
	for _, ns := range cfg.Nomad.Namespaces {
		out[stages.ConsulFabioPolicy(ns)] = fmt.Sprintf(`node_prefix "" { policy = "read" }
service_prefix %q { policy = "read" }
agent_prefix "" { policy = "read" }
`, ns+"-")
	}
	return out
}

// token is a Consul ACL token bootstrap owns. Its secret is generated and
// stored before the token is created, so a run killed in between creates it
// with the same secret next time.
type token struct {
	name     string // description "bootstrap: <name>", secret consul/tokens/<name>
	policies []string
	node     string // node identity, for agent tokens
}

func (t token) description() string { return "bootstrap: " + t.name }
func (t token) secretName() string  { return "consul/tokens/" + t.name }

func wantTokens(cfg *config.Platform, inv *inventory.Inventory) []token {
	ts := []token{
		{name: "nomad-agent", policies: []string{"nomad-agent"}},
		{name: "prometheus", policies: []string{"prometheus"}},
		{name: "fabio", policies: []string{"fabio"}},
		{name: "operator-read", policies: []string{"operator-read"}},
		{name: "dns", policies: []string{"dns"}},
	}
	for _, ns := range cfg.Nomad.Namespaces {
		ts = append(ts, token{name: stages.ConsulFabioPolicy(ns), policies: []string{stages.ConsulFabioPolicy(ns)}})
	}
	for _, n := range inv.Nodes {
		ts = append(ts, token{name: "agent-" + n.Name, node: n.Name})
	}
	return ts
}

// agentTokenNote records, per node, "<accessor>@<agent node ID>" of the
// agent token the stage set on that agent: agents do not report which token
// they hold, but a wiped agent comes back with a new node ID.
func agentTokenNote(node string) string { return "consul_agent_token_" + node }

// dnsTokenNote records the node ID of an agent that has the DNS token.
func dnsTokenNote(node string) string { return "consul_dns_token_" + node }

// agentID returns the node ID of a node's Consul agent. A server that has
// just restarted (a run killed in a rolling restart) refuses every token
// until it has caught up with the leader's ACL state: it is waited for.
func agentID(ctx context.Context, e *stages.Env, n inventory.Node, mgmt string) (string, error) {
	c, err := cluster.ConsulAgent(e, n, mgmt)
	if err != nil {
		return "", err
	}
	var self map[string]map[string]any
	err = poll.Retry(ctx, time.Minute, time.Second, func() error {
		self, err = c.Agent().Self()
		return err
	}, func(err error) bool {
		return !cluster.LeaderChanging(err) && !strings.Contains(err.Error(), "ACL system must be bootstrapped")
	})
	if err != nil {
		return "", fmt.Errorf("consul: agent %s: %w", n.Name, err)
	}
	id, _ := self["Config"]["NodeID"].(string)
	if id == "" {
		return "", fmt.Errorf("consul: agent %s reports no node ID", n.Name)
	}
	return id, nil
}

func isPermissionDenied(err error) bool {
	if err == nil {
		return false
	}
	var se consulapi.StatusError
	if errors.As(err, &se) && se.Code == 403 {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "403") || strings.Contains(s, "ACL not found") || strings.Contains(s, "Permission denied")
}

func bootstrapDone(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no longer allowed")
}

// acl is Consul's ACL system seen with one token (cluster.ACL).
type acl struct {
	c     *consulapi.Client
	token string
}

func (a acl) Self(ctx context.Context) error {
	_, _, err := a.c.ACL().TokenReadSelf((&consulapi.QueryOptions{}).WithContext(ctx))
	return err
}

func (a acl) Bootstrap(context.Context) error {
	_, _, err := a.c.ACL().BootstrapWithToken(a.token)
	return err
}

// convergeACL bootstraps the ACL system crash-safely and converges
// policies, tokens, the agents' tokens and the Vault KV copies.
func convergeACL(ctx context.Context, e *stages.Env, d *deps, as cluster.Agents, p *reconcile.Plan) error {
	server := as.Server()
	mgmt, ok, err := cluster.Bootstrap{
		Name:   "consul",
		Secret: stages.SecretConsulBootstrapToken,
		Client: func(token string) (cluster.ACL, error) {
			c, err := cluster.ConsulAgent(e, server, token)
			return acl{c, token}, err
		},
		Denied:    isPermissionDenied,
		Done:      bootstrapDone,
		LockedOut: ErrLockedOut,
		ResetURL:  "https://developer.hashicorp.com/consul/docs/secure/acl/reset",
	}.Run(ctx, e.Secrets, p)
	if err != nil {
		return err
	}
	if ok && p.Apply {
		if err := waitCaughtUp(ctx, e, d.inv, mgmt); err != nil {
			return err
		}
	}
	if snap, ok := e.RestoreSnapshot("consul"); ok {
		if err := p.Do(reconcile.Restore, "consul", restoreDetail, func() error { return restore(ctx, e, d.inv, server, mgmt, snap) }); err != nil {
			return err
		}
	}
	pols := Policies(e.Config)
	if !ok {
		for _, name := range slices.Sorted(maps.Keys(pols)) {
			p.Planned(reconcile.Create, "consul policy "+name, "")
		}
		for _, t := range wantTokens(e.Config, d.inv) {
			p.Planned(reconcile.Create, "consul token "+t.name, "")
		}
		return nil
	}
	c, err := cluster.ConsulAgent(e, server, mgmt)
	if err != nil {
		return err
	}
	q := (&consulapi.QueryOptions{}).WithContext(ctx)
	w := (&consulapi.WriteOptions{}).WithContext(ctx)
	have, err := readPolicies(c, q)
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(pols)) {
		h, exists := have[name]
		switch {
		case !exists:
			err = p.Do(reconcile.Create, "consul policy "+name, "", func() error {
				_, _, err := c.ACL().PolicyCreate(&consulapi.ACLPolicy{Name: name, Description: "bootstrap", Rules: pols[name]}, w)
				return err
			})
		case normRules(h.Rules) != normRules(pols[name]):
			err = p.Do(reconcile.Update, "consul policy "+name, "rules differ", func() error {
				h.Rules = pols[name]
				_, _, err := c.ACL().PolicyUpdate(h, w)
				return err
			})
		}
		if err != nil {
			return fmt.Errorf("consul: %w", err)
		}
	}
	if mgmt, err = rotateTokens(ctx, e, c, p, d.inv, mgmt); err != nil {
		return err
	}
	toks, err := readTokens(c, q)
	if err != nil {
		return err
	}
	vc, err := cluster.Vault(ctx, e, d.vault)
	if err != nil {
		return err
	}
	for _, t := range wantTokens(e.Config, d.inv) {
		secret, changed, err := ensureToken(e, c, w, p, toks, t)
		if err != nil {
			return err
		}
		if err := e.EndTokenRotation(p.Apply, t.name); err != nil {
			return err
		}
		if changed && !p.Apply {
			continue // what depends on the token follows from its change
		}
		// An agent that is down is started first (planned already).
		if t.node != "" && as.IsUp(t.node) {
			if err := agentTokens(ctx, e, p, d.inv, t, secret, mgmt, toks); err != nil {
				return err
			}
		}
		if err := cluster.CopyToKV(ctx, p, vc, t.secretName(), secret); err != nil {
			return err
		}
	}
	if err := deleteStale(ctx, e, c, w, p, vc, toks, wantTokens(e.Config, d.inv)); err != nil {
		return err
	}
	if err := cluster.CopyToKV(ctx, p, vc, stages.SecretConsulBootstrapToken, mgmt); err != nil {
		return err
	}
	addrs := map[string]string{}
	for _, n := range pki.ConsulTemplateNodes(d.inv) {
		addrs[n.Name] = stages.ConsulAddr(n)
	}
	return cluster.RetireOldCAs(ctx, p, vc, "consul", e.CAFile("consul"), addrs)
}

// deleteStale revokes the tokens bootstrap made that the platform no longer
// wants (a removed node's agent token, a removed namespace's Fabio token),
// with their copies and notes.
func deleteStale(ctx context.Context, e *stages.Env, c *consulapi.Client, w *consulapi.WriteOptions, p *reconcile.Plan, vc *vaultapi.Client, have map[string]*consulapi.ACLTokenListEntry, want []token) error {
	wanted := map[string]bool{"bootstrap: management": true}
	for _, t := range want {
		wanted[t.description()] = true
	}
	for _, desc := range slices.Sorted(maps.Keys(have)) {
		if wanted[desc] {
			continue
		}
		t := token{name: strings.TrimPrefix(desc, "bootstrap: ")}
		err := p.Do(reconcile.Delete, "consul token "+t.name, "no longer wanted: revoked", func() error {
			if _, err := c.ACL().TokenDelete(have[desc].AccessorID, w); err != nil {
				return err
			}
			if _, err := vc.Logical().DeleteWithContext(ctx, pki.KVMetadataPath(t.secretName())); err != nil {
				return fmt.Errorf("vault: delete %s: %w", pki.KVMetadataPath(t.secretName()), err)
			}
			if err := e.Secrets.Delete(t.secretName()); err != nil {
				return err
			}
			node := strings.TrimPrefix(t.name, "agent-")
			return e.DeleteNotes(agentTokenNote(node), dnsTokenNote(node))
		})
		if err != nil {
			return fmt.Errorf("consul: %w", err)
		}
	}
	return nil
}

func normRules(s string) string { return strings.Join(strings.Fields(s), " ") }

func readPolicies(c *consulapi.Client, q *consulapi.QueryOptions) (map[string]*consulapi.ACLPolicy, error) {
	list, _, err := c.ACL().PolicyList(q)
	if err != nil {
		return nil, fmt.Errorf("consul: list policies: %w", err)
	}
	out := map[string]*consulapi.ACLPolicy{}
	for _, p := range list {
		full, _, err := c.ACL().PolicyRead(p.ID, q)
		if err != nil {
			return nil, fmt.Errorf("consul: read policy %s: %w", p.Name, err)
		}
		out[p.Name] = full
	}
	return out, nil
}

func readTokens(c *consulapi.Client, q *consulapi.QueryOptions) (map[string]*consulapi.ACLTokenListEntry, error) {
	list, _, err := c.ACL().TokenList(q)
	if err != nil {
		return nil, fmt.Errorf("consul: list tokens: %w", err)
	}
	out := map[string]*consulapi.ACLTokenListEntry{}
	for _, t := range list {
		if strings.HasPrefix(t.Description, "bootstrap: ") {
			out[t.Description] = t
		}
	}
	return out, nil
}

// tokenFields are the fields of a token bootstrap compares.
func tokenFields(pols []*consulapi.ACLTokenPolicyLink, nodes []*consulapi.ACLNodeIdentity) map[string]any {
	var ps, ns []string
	for _, p := range pols {
		ps = append(ps, p.Name)
	}
	for _, n := range nodes {
		ns = append(ns, n.NodeName)
	}
	return map[string]any{"policies": ps, "node_identities": ns}
}

// ensureToken creates, replaces or updates one token, and returns its
// secret and whether it changed.
func ensureToken(e *stages.Env, c *consulapi.Client, w *consulapi.WriteOptions, p *reconcile.Plan, have map[string]*consulapi.ACLTokenListEntry, t token) (string, bool, error) {
	secret, stored, err := e.Secrets.Get(t.secretName())
	if err != nil {
		return "", false, err
	}
	want := &consulapi.ACLToken{Description: t.description()}
	for _, pol := range t.policies {
		want.Policies = append(want.Policies, &consulapi.ACLTokenPolicyLink{Name: pol})
	}
	if t.node != "" {
		want.NodeIdentities = []*consulapi.ACLNodeIdentity{{NodeName: t.node, Datacenter: e.Config.Datacenter}}
	}
	h, exists := have[t.description()]
	// create stores the secret before it creates the token, so a run killed
	// in between creates the same token next time. A secret cannot change:
	// a token with another one is replaced.
	create := func() error {
		s, _, err := e.Secrets.GetOrCreate(t.secretName(), secrets.NewUUID)
		if err != nil {
			return err
		}
		if exists {
			if _, err := c.ACL().TokenDelete(h.AccessorID, w); err != nil {
				return err
			}
		}
		want.SecretID, secret = s, s
		created, _, err := c.ACL().TokenCreate(want, w)
		if err != nil {
			return err
		}
		have[t.description()] = &consulapi.ACLTokenListEntry{AccessorID: created.AccessorID, SecretID: s, Description: want.Description}
		return nil
	}
	target := "consul token " + t.name
	switch {
	case !exists || !stored:
		err = p.Do(reconcile.Create, target, "", create)
	case h.SecretID != secret:
		err = p.Do(reconcile.Replace, target, "its secret differs from the stored one", create)
	default:
		diff := reconcile.Differences(tokenFields(h.Policies, h.NodeIdentities), tokenFields(want.Policies, want.NodeIdentities))
		if len(diff) == 0 {
			return secret, false, nil
		}
		err = p.Do(reconcile.Update, target, strings.Join(diff, "; "), func() error {
			want.SecretID, want.AccessorID = secret, h.AccessorID
			_, _, err := c.ACL().TokenUpdate(want, w)
			return err
		})
	}
	if err != nil {
		return "", false, fmt.Errorf("consul: %w", err)
	}
	return secret, true, nil
}

// agentTokens hands a node's agent its own token and the DNS token through
// the node's own API. Agents persist them (enable_token_persistence), so
// this happens once per agent: a wiped agent comes back with a new node ID.
func agentTokens(ctx context.Context, e *stages.Env, p *reconcile.Plan, inv *inventory.Inventory, t token, secret, mgmt string, toks map[string]*consulapi.ACLTokenListEntry) error {
	n, _ := inv.Node(t.node)
	id, err := agentID(ctx, e, n, mgmt)
	if err != nil {
		return err
	}
	c, err := cluster.ConsulAgent(e, n, mgmt)
	if err != nil {
		return err
	}
	w := (&consulapi.WriteOptions{}).WithContext(ctx)
	if mark := toks[t.description()].AccessorID + "@" + id; e.Note(agentTokenNote(t.node)) != mark {
		if err := p.Do(reconcile.Update, "consul agent token on "+t.node, "", func() error {
			if _, err := c.Agent().UpdateAgentACLToken(secret, w); err != nil {
				return err
			}
			return e.SetNote(agentTokenNote(t.node), mark)
		}); err != nil {
			return fmt.Errorf("consul: %w", err)
		}
	}
	if e.Note(dnsTokenNote(t.node)) == id {
		return nil
	}
	if err := p.Do(reconcile.Update, "consul DNS token on "+t.node, "", func() error {
		dns, ok, err := e.Secrets.Get("consul/tokens/dns")
		if err != nil || !ok {
			return fmt.Errorf("the DNS token is not in the store: %v", err)
		}
		if _, err := c.Agent().UpdateDNSToken(dns, w); err != nil {
			return err
		}
		return e.SetNote(dnsTokenNote(t.node), id)
	}); err != nil {
		return fmt.Errorf("consul: %w", err)
	}
	return nil
}
