package nomad

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/consul"
)

// Consul trusts the identities Nomad signs for services: Nomad clients log
// in with a service's identity and register it with the token they get, so
// Consul, not the Nomad agent, decides which names a job may register. The
// binding rules give a job in "general" any name and a job in an
// application namespace only names that start with "<namespace>-": it can
// never register a platform service, or another namespace's.
const consulAuthMethod = "nomad-workloads"

func consulAuthMethodWant(e *stages.Env, inv *inventory.Inventory) (*consulapi.ACLAuthMethod, error) {
	ca, err := os.ReadFile(CAFile(e))
	if err != nil {
		return nil, err
	}
	// Consul takes one JWKS URL; it caches the keys, so logins go on while
	// that server is down until Nomad rotates its signing key.
	server := inv.WithRole(inventory.RoleServer)[0]
	return &consulapi.ACLAuthMethod{
		Name:        consulAuthMethod,
		Type:        "jwt",
		DisplayName: "Nomad workload identities",
		Description: "bootstrap",
		Config: map[string]any{
			"JWKSURL":          Addr(server) + "/.well-known/jwks.json",
			"JWKSCACert":       string(ca),
			"JWTSupportedAlgs": []any{"RS256"},
			"BoundAudiences":   []any{"consul.io"},
			"ClaimMappings": map[string]any{
				"nomad_namespace": "nomad_namespace",
				"nomad_job_id":    "nomad_job_id",
				"nomad_service":   "nomad_service",
			},
		},
	}, nil
}

// consulBindingRules are the wanted rules, by selector.
func consulBindingRules(cfg *config.Platform) map[string]*consulapi.ACLBindingRule {
	rule := func(sel string) *consulapi.ACLBindingRule {
		return &consulapi.ACLBindingRule{AuthMethod: consulAuthMethod, Description: "bootstrap", Selector: sel, BindType: consulapi.BindingRuleBindTypeService, BindName: "${value.nomad_service}"}
	}
	out := map[string]*consulapi.ACLBindingRule{}
	add := func(r *consulapi.ACLBindingRule) { out[r.Selector] = r }
	add(rule(fmt.Sprintf("value.nomad_namespace==%q", config.GeneralNamespace)))
	for _, ns := range cfg.Nomad.Namespaces {
		add(rule(fmt.Sprintf("value.nomad_namespace==%q and value.nomad_service matches %q", ns, "^"+ns+"-[a-z0-9-]+$")))
	}
	return out
}

// consulServer returns a client of the first Consul server that answers:
// the plan must not depend on any one server being up.
func consulServer(ctx context.Context, e *stages.Env, inv *inventory.Inventory, mgmt string) (*consulapi.Client, error) {
	var errs []error
	for _, n := range inv.WithRole(inventory.RoleServer) {
		c, err := consul.Client(e, n, mgmt)
		if err == nil {
			_, err = c.Status().LeaderWithQueryOptions((&consulapi.QueryOptions{}).WithContext(ctx))
		}
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
	}
	return nil, fmt.Errorf("consul: no server answers: %w", errors.Join(errs...))
}

func authMethodDiffers(have, want *consulapi.ACLAuthMethod) bool {
	if have == nil || have.Type != want.Type || have.DisplayName != want.DisplayName {
		return true
	}
	for k, w := range want.Config {
		if fmt.Sprint(have.Config[k]) != fmt.Sprint(w) {
			return true
		}
	}
	return false
}

// consulWI plans (apply=false) or converges (apply=true) Consul's trust in
// Nomad's service identities.
func consulWI(ctx context.Context, e *stages.Env, inv *inventory.Inventory, apply bool) ([]stages.Change, error) {
	mgmt, ok, err := e.Secrets.Get(stages.SecretConsulBootstrapToken)
	if err != nil || !ok {
		return nil, fmt.Errorf("consul: the management token is not in the store (run the consul stage): %v", err)
	}
	c, err := consulServer(ctx, e, inv, mgmt)
	if err != nil {
		return nil, err
	}
	q := (&consulapi.QueryOptions{}).WithContext(ctx)
	w := (&consulapi.WriteOptions{}).WithContext(ctx)
	var out []stages.Change
	want, err := consulAuthMethodWant(e, inv)
	if err != nil {
		return nil, err
	}
	have, _, err := c.ACL().AuthMethodRead(consulAuthMethod, q)
	if err != nil {
		return nil, fmt.Errorf("consul: read auth method %s: %w", consulAuthMethod, err)
	}
	if authMethodDiffers(have, want) {
		action := "update"
		if have == nil {
			action = "create"
		}
		out = append(out, stages.Change{Action: action, Target: "consul auth method " + consulAuthMethod, Detail: "trust Nomad's service identities"})
		if apply {
			e.Step("writing consul auth method %s", consulAuthMethod)
			if have == nil {
				_, _, err = c.ACL().AuthMethodCreate(want, w)
			} else {
				_, _, err = c.ACL().AuthMethodUpdate(want, w)
			}
			if err != nil {
				return nil, fmt.Errorf("consul: write auth method %s: %w", consulAuthMethod, err)
			}
		}
	}
	var rules []*consulapi.ACLBindingRule
	if have != nil || apply {
		rules, _, err = c.ACL().BindingRuleList(consulAuthMethod, q)
		if err != nil {
			return nil, fmt.Errorf("consul: list binding rules: %w", err)
		}
	}
	wantRules := consulBindingRules(e.Config)
	haveRules := map[string]*consulapi.ACLBindingRule{}
	for _, r := range rules {
		if wr, ok := wantRules[r.Selector]; ok && r.BindType == wr.BindType && r.BindName == wr.BindName {
			haveRules[r.Selector] = r
			continue
		}
		// A rule bootstrap does not want would widen what a namespace may
		// register: it goes.
		out = append(out, stages.Change{Action: "delete", Target: "consul binding rule", Detail: r.Selector})
		if apply {
			if _, err := c.ACL().BindingRuleDelete(r.ID, w); err != nil {
				return nil, fmt.Errorf("consul: delete binding rule %s: %w", r.ID, err)
			}
		}
	}
	for _, sel := range slices.Sorted(maps.Keys(wantRules)) {
		if _, ok := haveRules[sel]; ok {
			continue
		}
		out = append(out, stages.Change{Action: "create", Target: "consul binding rule", Detail: sel})
		if apply {
			e.Step("creating consul binding rule %s", sel)
			if _, _, err := c.ACL().BindingRuleCreate(wantRules[sel], w); err != nil {
				return nil, fmt.Errorf("consul: create binding rule %q: %w", sel, err)
			}
		}
	}
	return out, nil
}
