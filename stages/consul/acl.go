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

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// policies returns the ACL policies the platform needs, least privilege
// each.
func policies(cfg *config.Platform) map[string]string {
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
		out[FabioPolicy(ns)] = fmt.Sprintf(`node_prefix "" { policy = "read" }
service_prefix %q { policy = "read" }
agent_prefix "" { policy = "read" }
`, ns+"-")
	}
	return out
}

// FabioPolicy is the policy of application namespace ns's Fabio.
func FabioPolicy(ns string) string { return "fabio-" + ns }

// SecretFabioNamespaceToken is where the Consul token of namespace ns's
// Fabio is kept.
func SecretFabioNamespaceToken(ns string) string { return "consul/tokens/" + FabioPolicy(ns) }

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

// Token secret names other stages read.
const (
	SecretNomadAgentToken = "consul/tokens/nomad-agent"
	SecretPrometheusToken = "consul/tokens/prometheus"
	SecretFabioToken      = "consul/tokens/fabio"
)

func wantTokens(cfg *config.Platform, inv *inventory.Inventory) []token {
	ts := []token{
		{name: "nomad-agent", policies: []string{"nomad-agent"}},
		{name: "prometheus", policies: []string{"prometheus"}},
		{name: "fabio", policies: []string{"fabio"}},
		{name: "operator-read", policies: []string{"operator-read"}},
		{name: "dns", policies: []string{"dns"}},
	}
	for _, ns := range cfg.Nomad.Namespaces {
		ts = append(ts, token{name: FabioPolicy(ns), policies: []string{FabioPolicy(ns)}})
	}
	for _, n := range inv.Nodes {
		ts = append(ts, token{name: "agent-" + n.Name, node: n.Name})
	}
	return ts
}

// agentTokenOutput records, per node, "<accessor>@<agent node ID>" of the
// agent token the stage set on that agent: agents do not report which token
// they hold, but a wiped agent comes back with a new node ID.
func agentTokenOutput(node string) string { return "consul_agent_token_" + node }

// dnsTokenOutput records the node ID of an agent that has the DNS token.
func dnsTokenOutput(node string) string { return "consul_dns_token_" + node }

// agentID returns the node ID of a node's Consul agent.
func agentID(ctx context.Context, e *stages.Env, n inventory.Node, mgmt string) (string, error) {
	c, err := Client(e, n, mgmt)
	if err != nil {
		return "", err
	}
	self, err := c.Agent().Self()
	if err != nil {
		return "", fmt.Errorf("consul: agent %s: %w", n.Name, err)
	}
	cfg, _ := self["Config"]
	id, _ := cfg["NodeID"].(string)
	if id == "" {
		return "", fmt.Errorf("consul: agent %s reports no node ID", n.Name)
	}
	return id, nil
}

func isUp(as []agentState, node string) bool {
	for _, a := range as {
		if a.node.Name == node {
			return a.up()
		}
	}
	return false
}

func firstUp(as []agentState) (inventory.Node, bool) {
	for _, a := range as {
		if a.up() && a.node.Has(inventory.RoleServer) {
			return a.node, true
		}
	}
	for _, a := range as {
		if a.up() {
			return a.node, true
		}
	}
	return inventory.Node{}, false
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

// readSelf checks the client's token. Errors other than a refusal (no
// leader yet, a server that just died) are retried for a while: the cluster
// elects a new leader within seconds.
func readSelf(ctx context.Context, c *consulapi.Client) error {
	return poll.Retry(ctx, 45*time.Second, time.Second, func() error {
		_, _, err := c.ACL().TokenReadSelf((&consulapi.QueryOptions{}).WithContext(ctx))
		return err
	}, isPermissionDenied)
}

// planACL reads policies and tokens and lists what differs.
func (s *Stage) planACL(ctx context.Context, e *stages.Env, d *deps, as []agentState) ([]stages.Change, error) {
	mgmt, ok, err := e.Secrets.Get(stages.SecretConsulBootstrapToken)
	if err != nil {
		return nil, err
	}
	pols := policies(e.Config)
	all := []stages.Change{{Action: "bootstrap", Target: "consul ACLs", Detail: "token generated and stored first"}}
	for _, name := range slices.Sorted(maps.Keys(pols)) {
		all = append(all, stages.Change{Action: "create", Target: "consul policy " + name})
	}
	for _, t := range wantTokens(e.Config, d.inv) {
		all = append(all, stages.Change{Action: "create", Target: "consul token " + t.name})
	}
	if !ok {
		return all, nil
	}
	node, _ := firstUp(as)
	c, err := Client(e, node, mgmt)
	if err != nil {
		return nil, err
	}
	q := (&consulapi.QueryOptions{}).WithContext(ctx)
	if err := readSelf(ctx, c); err != nil {
		if isPermissionDenied(err) {
			// Stored but not used yet: a run stopped between storing the
			// secret and bootstrapping.
			return all, nil
		}
		return nil, fmt.Errorf("consul: check the bootstrap token: %w", err)
	}
	var out []stages.Change
	have, err := readPolicies(c, q)
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(pols)) {
		p, ok := have[name]
		switch {
		case !ok:
			out = append(out, stages.Change{Action: "create", Target: "consul policy " + name})
		case normRules(p.Rules) != normRules(pols[name]):
			out = append(out, stages.Change{Action: "update", Target: "consul policy " + name, Detail: "rules differ"})
		}
	}
	toks, err := readTokens(c, q)
	if err != nil {
		return nil, err
	}
	for _, t := range wantTokens(e.Config, d.inv) {
		diff, err := tokenDiff(e, c, q, toks, t)
		if err != nil {
			return nil, err
		}
		if diff != nil {
			out = append(out, *diff)
			continue
		}
		if t.node != "" {
			n, _ := d.inv.Node(t.node)
			if !isUp(as, t.node) {
				continue // "start consul on <node>" is already planned
			}
			id, err := agentID(ctx, e, n, mgmt)
			if err != nil {
				return nil, err
			}
			if e.State.Output(agentTokenOutput(t.node)) != toks[t.description()].AccessorID+"@"+id {
				out = append(out, stages.Change{Action: "update", Target: "consul agent token on " + t.node})
			}
			if e.State.Output(dnsTokenOutput(t.node)) != id {
				out = append(out, stages.Change{Action: "update", Target: "consul DNS token on " + t.node})
			}
		}
		secret, _, _ := e.Secrets.Get(t.secretName())
		if differs, err := kvDiffers(ctx, e, d, t.secretName(), secret); err != nil {
			return nil, err
		} else if differs {
			out = append(out, stages.Change{Action: "update", Target: "vault kv " + pki.KVPath(t.secretName())})
		}
	}
	return out, nil
}

func kvDiffers(ctx context.Context, e *stages.Env, d *deps, name, value string) (bool, error) {
	tok, err := pki.Token(ctx, e, d.vault)
	if err != nil {
		return false, err
	}
	c, err := d.vault.Clone()
	if err != nil {
		return false, err
	}
	c.SetToken(tok)
	return pki.KVDiffers(ctx, c, name, value)
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

// tokenDiff compares one wanted token with the cluster's; nil when equal.
func tokenDiff(e *stages.Env, c *consulapi.Client, q *consulapi.QueryOptions, have map[string]*consulapi.ACLTokenListEntry, t token) (*stages.Change, error) {
	secret, ok, err := e.Secrets.Get(t.secretName())
	if err != nil {
		return nil, err
	}
	h, exists := have[t.description()]
	if !exists || !ok {
		return &stages.Change{Action: "create", Target: "consul token " + t.name}, nil
	}
	if h.SecretID != secret {
		return &stages.Change{Action: "replace", Target: "consul token " + t.name, Detail: "its secret differs from the stored one"}, nil
	}
	var pols []string
	for _, p := range h.Policies {
		pols = append(pols, p.Name)
	}
	slices.Sort(pols)
	want := slices.Clone(t.policies)
	slices.Sort(want)
	if !slices.Equal(pols, want) {
		return &stages.Change{Action: "update", Target: "consul token " + t.name, Detail: fmt.Sprintf("policies %v → %v", pols, want)}, nil
	}
	if t.node != "" && (len(h.NodeIdentities) != 1 || h.NodeIdentities[0].NodeName != t.node) {
		return &stages.Change{Action: "update", Target: "consul token " + t.name, Detail: "node identity"}, nil
	}
	return nil, nil
}

// applyACL bootstraps the ACL system crash-safely and converges policies,
// tokens, the agents' tokens and the Vault KV copies.
func (s *Stage) applyACL(ctx context.Context, e *stages.Env, d *deps) error {
	servers := d.inv.WithRole(inventory.RoleServer)
	mgmt, err := bootstrapACL(ctx, e, servers)
	if err != nil {
		return err
	}
	c, err := Client(e, servers[0], mgmt)
	if err != nil {
		return err
	}
	q := (&consulapi.QueryOptions{}).WithContext(ctx)
	w := (&consulapi.WriteOptions{}).WithContext(ctx)
	have, err := readPolicies(c, q)
	if err != nil {
		return err
	}
	pols := policies(e.Config)
	for _, name := range slices.Sorted(maps.Keys(pols)) {
		p, ok := have[name]
		switch {
		case !ok:
			e.Step("creating consul policy %s", name)
			if _, _, err := c.ACL().PolicyCreate(&consulapi.ACLPolicy{Name: name, Description: "bootstrap", Rules: pols[name]}, w); err != nil {
				return fmt.Errorf("consul: create policy %s: %w", name, err)
			}
		case normRules(p.Rules) != normRules(pols[name]):
			e.Step("updating consul policy %s", name)
			p.Rules = pols[name]
			if _, _, err := c.ACL().PolicyUpdate(p, w); err != nil {
				return fmt.Errorf("consul: update policy %s: %w", name, err)
			}
		}
	}
	toks, err := readTokens(c, q)
	if err != nil {
		return err
	}
	vtok, err := pki.Token(ctx, e, d.vault)
	if err != nil {
		return err
	}
	vc, err := d.vault.Clone()
	if err != nil {
		return err
	}
	vc.SetToken(vtok)
	for _, t := range wantTokens(e.Config, d.inv) {
		secret, err := ensureToken(ctx, e, c, toks, t)
		if err != nil {
			return err
		}
		if t.node != "" {
			if err := setAgentToken(ctx, e, d.inv, t, secret, mgmt, toks); err != nil {
				return err
			}
		}
		if err := pki.StoreKV(ctx, vc, t.secretName(), secret); err != nil {
			return err
		}
	}
	if err := pki.StoreKV(ctx, vc, stages.SecretConsulBootstrapToken, mgmt); err != nil {
		return err
	}
	return setDNSTokens(ctx, e, d.inv, mgmt)
}

// bootstrapACL generates the management token's secret, stores it, and only
// then bootstraps the ACL system with it (consul-k8s' hole: bootstrap
// succeeded but the token was never saved, and the cluster is locked out for
// good). A later run that finds ACLs bootstrapped checks the stored token.
func bootstrapACL(ctx context.Context, e *stages.Env, servers []inventory.Node) (string, error) {
	mgmt, created, err := e.Secrets.GetOrCreate(stages.SecretConsulBootstrapToken, secrets.NewUUID)
	if err != nil {
		return "", err
	}
	c, err := Client(e, servers[0], mgmt)
	if err != nil {
		return "", err
	}
	if !created {
		err := readSelf(ctx, c)
		if err == nil {
			return mgmt, nil
		}
		if !isPermissionDenied(err) {
			return "", fmt.Errorf("consul: check the bootstrap token: %w", err)
		}
	}
	crashpoint.Hit("consul:before-acl-bootstrap")
	e.Step("bootstrapping consul ACLs")
	// Right after a leader election the ACL system may not be ready yet.
	err = poll.Retry(ctx, time.Minute, time.Second, func() error {
		_, _, err := c.ACL().BootstrapWithToken(mgmt)
		return err
	}, bootstrapDone)
	if bootstrapDone(err) {
		if readSelf(ctx, c) != nil {
			return "", fmt.Errorf("%w: the stored token %s is not valid; reset the bootstrap (https://developer.hashicorp.com/consul/docs/secure/acl/reset) and put the new management token there", ErrLockedOut, e.Secrets.Path(stages.SecretConsulBootstrapToken))
		}
		err = nil // bootstrapped by an earlier, interrupted run
	}
	if err != nil {
		return "", fmt.Errorf("consul ACL bootstrap: %w", err)
	}
	crashpoint.Hit("consul:after-acl-bootstrap")
	return mgmt, nil
}

func bootstrapDone(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no longer allowed")
}

// ensureToken creates or updates one token and returns its secret.
func ensureToken(ctx context.Context, e *stages.Env, c *consulapi.Client, have map[string]*consulapi.ACLTokenListEntry, t token) (string, error) {
	q := (&consulapi.QueryOptions{}).WithContext(ctx)
	w := (&consulapi.WriteOptions{}).WithContext(ctx)
	diff, err := tokenDiff(e, c, q, have, t)
	if err != nil {
		return "", err
	}
	secret, _, err := e.Secrets.GetOrCreate(t.secretName(), secrets.NewUUID)
	if err != nil {
		return "", err
	}
	if diff == nil {
		return secret, nil
	}
	want := &consulapi.ACLToken{SecretID: secret, Description: t.description()}
	for _, p := range t.policies {
		want.Policies = append(want.Policies, &consulapi.ACLTokenPolicyLink{Name: p})
	}
	if t.node != "" {
		want.NodeIdentities = []*consulapi.ACLNodeIdentity{{NodeName: t.node, Datacenter: e.Config.Datacenter}}
	}
	h, exists := have[t.description()]
	switch {
	case exists && h.SecretID != secret:
		// Secrets cannot change; the token is replaced by one with the
		// stored secret.
		if _, err := c.ACL().TokenDelete(h.AccessorID, w); err != nil {
			return "", fmt.Errorf("consul: delete token %s: %w", t.name, err)
		}
		exists = false
		fallthrough
	case !exists:
		e.Step("creating consul token %s", t.name)
		created, _, err := c.ACL().TokenCreate(want, w)
		if err != nil {
			return "", fmt.Errorf("consul: create token %s: %w", t.name, err)
		}
		have[t.description()] = &consulapi.ACLTokenListEntry{AccessorID: created.AccessorID, SecretID: secret, Description: want.Description}
	default:
		e.Step("updating consul token %s", t.name)
		want.AccessorID = h.AccessorID
		if _, _, err := c.ACL().TokenUpdate(want, w); err != nil {
			return "", fmt.Errorf("consul: update token %s: %w", t.name, err)
		}
	}
	return secret, nil
}

// setAgentToken hands a node's agent its token through the node's own API.
// Agents persist it (enable_token_persistence), so this happens once.
func setAgentToken(ctx context.Context, e *stages.Env, inv *inventory.Inventory, t token, secret, mgmt string, toks map[string]*consulapi.ACLTokenListEntry) error {
	n, _ := inv.Node(t.node)
	id, err := agentID(ctx, e, n, mgmt)
	if err != nil {
		return err
	}
	mark := toks[t.description()].AccessorID + "@" + id
	if e.State.Output(agentTokenOutput(t.node)) == mark {
		return nil
	}
	c, err := Client(e, n, mgmt)
	if err != nil {
		return err
	}
	e.Step("setting the agent token of %s", t.node)
	if _, err := c.Agent().UpdateAgentACLToken(secret, (&consulapi.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("consul: set the agent token on %s: %w", t.node, err)
	}
	return e.State.SetOutput(agentTokenOutput(t.node), mark)
}

// setDNSTokens gives every agent the DNS token, for .consul lookups.
func setDNSTokens(ctx context.Context, e *stages.Env, inv *inventory.Inventory, mgmt string) error {
	secret, ok, err := e.Secrets.Get("consul/tokens/dns")
	if err != nil || !ok {
		return err
	}
	for _, n := range inv.Nodes {
		id, err := agentID(ctx, e, n, mgmt)
		if err != nil {
			return err
		}
		if e.State.Output(dnsTokenOutput(n.Name)) == id {
			continue
		}
		c, err := Client(e, n, mgmt)
		if err != nil {
			return err
		}
		if _, err := c.Agent().UpdateDNSToken(secret, (&consulapi.WriteOptions{}).WithContext(ctx)); err != nil {
			return fmt.Errorf("consul: set the DNS token on %s: %w", n.Name, err)
		}
		if err := e.State.SetOutput(dnsTokenOutput(n.Name), id); err != nil {
			return err
		}
	}
	return nil
}
