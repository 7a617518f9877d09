package nomad

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Consul trusts the identities Nomad signs for services: Nomad clients log
// in with a service's identity and register it with the token they get, so
// Consul, not the Nomad agent, decides which names a job may register. The
// binding rules give a job in "general" any name and a job in an
// application namespace only names that start with "<namespace>-": it can
// never register a platform service, or another namespace's.
const consulAuthMethod = "nomad-workloads"

func consulAuthMethodWant(ctx context.Context, e *stages.Env, inv *inventory.Inventory) (*consulapi.ACLAuthMethod, []string, error) {
	keys, kids, err := signingKeys(ctx, e, inv)
	if err != nil {
		return nil, nil, err
	}
	return &consulapi.ACLAuthMethod{
		Name:        consulAuthMethod,
		Type:        "jwt",
		DisplayName: "Nomad workload identities",
		Description: "bootstrap",
		Config: map[string]any{
			"JWTValidationPubKeys": keys,
			"JWTSupportedAlgs":     []any{"RS256"},
			"BoundAudiences":       []any{"consul.io"},
			"ClaimMappings": map[string]any{
				"nomad_namespace": "nomad_namespace",
				"nomad_job_id":    "nomad_job_id",
				"nomad_service":   "nomad_service",
			},
		},
	}, kids, nil
}

// jwk is the part of a JSON Web Key (RFC 7517) that Consul needs.
type jwk struct{ Kid, Kty, N, E string }

// pem returns the RSA public key k as PEM.
func (k jwk) pem() (string, error) {
	n, err1 := base64.RawURLEncoding.DecodeString(k.N)
	e, err2 := base64.RawURLEncoding.DecodeString(k.E)
	if err := errors.Join(err1, err2); err != nil {
		return "", err
	}
	der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())})
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// signingKeys returns Nomad's public signing keys as PEM, and their key
// ids, from the first server that answers.
//
// Consul is given the keys themselves rather than a JWKS URL: it takes only
// one URL, and the Consul leader fetches from it on its first login. With a
// URL naming one server, a new leader elected while that server is down
// could not log in any service identity, so no allocation could register a
// service. The price is that Consul must learn each new Nomad key. Nomad
// publishes the next key half its rotation period (15 of 30 days by
// default) before signing with it; every plan compares the keys and every
// up adds them, and status warns while Consul is missing one.
func signingKeys(ctx context.Context, e *stages.Env, inv *inventory.Inventory) ([]any, []string, error) {
	var set struct{ Keys []jwk }
	var errs []error
	for _, n := range inv.WithRole(inventory.RoleServer) {
		c, err := cluster.NomadAgent(e, n, "")
		if err == nil {
			_, err = c.Raw().Query("/.well-known/jwks.json", &set, (&nomadapi.QueryOptions{}).WithContext(ctx))
		}
		if err == nil {
			break
		}
		errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
	}
	if len(errs) == len(inv.WithRole(inventory.RoleServer)) {
		return nil, nil, fmt.Errorf("nomad: read the signing keys (/.well-known/jwks.json): %w", errors.Join(errs...))
	}
	slices.SortFunc(set.Keys, func(a, b jwk) int { return strings.Compare(a.Kid, b.Kid) })
	var keys []any
	var kids []string
	for _, k := range set.Keys {
		if k.Kty != "RSA" {
			continue // Consul refuses EdDSA
		}
		key, err := k.pem()
		if err != nil {
			return nil, nil, fmt.Errorf("nomad: signing key %s: %w", k.Kid, err)
		}
		keys = append(keys, key)
		kids = append(kids, k.Kid)
	}
	if len(keys) == 0 {
		return nil, nil, fmt.Errorf("nomad: no RS256 signing key in /.well-known/jwks.json")
	}
	return keys, kids, nil
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
		c, err := cluster.ConsulAgent(e, n, mgmt)
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
	return have.Type != want.Type || have.DisplayName != want.DisplayName || len(reconcile.Differences(have.Config, want.Config)) > 0
}

// consulWI records in p, and makes when p applies, the changes that give
// Consul trust in Nomad's service identities.
func consulWI(ctx context.Context, e *stages.Env, inv *inventory.Inventory, p *reconcile.Plan) error {
	mgmt, ok, err := e.Secrets.Get(stages.SecretConsulBootstrapToken)
	if err != nil || !ok {
		return fmt.Errorf("consul: the management token is not in the store (run the consul stage): %v", err)
	}
	c, err := consulServer(ctx, e, inv, mgmt)
	if err != nil {
		return err
	}
	q := (&consulapi.QueryOptions{}).WithContext(ctx)
	w := (&consulapi.WriteOptions{}).WithContext(ctx)
	want, kids, err := consulAuthMethodWant(ctx, e, inv)
	if err != nil {
		return err
	}
	have, _, err := c.ACL().AuthMethodRead(consulAuthMethod, q)
	if err != nil {
		return fmt.Errorf("consul: read auth method %s: %w", consulAuthMethod, err)
	}
	target := "consul auth method " + consulAuthMethod
	detail := "trust Nomad's service identities, signed by key " + strings.Join(kids, ", ")
	switch {
	case have == nil:
		err = p.Do(reconcile.Create, target, detail, func() error {
			_, _, err := c.ACL().AuthMethodCreate(want, w)
			return err
		})
	case authMethodDiffers(have, want):
		err = p.Do(reconcile.Update, target, detail, func() error {
			_, _, err := c.ACL().AuthMethodUpdate(want, w)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("consul: %w", err)
	}
	var rules []*consulapi.ACLBindingRule
	if have != nil || p.Apply {
		rules, _, err = c.ACL().BindingRuleList(consulAuthMethod, q)
		if err != nil {
			return fmt.Errorf("consul: list binding rules: %w", err)
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
		if err := p.Do(reconcile.Delete, "consul binding rule", r.Selector, func() error {
			_, err := c.ACL().BindingRuleDelete(r.ID, w)
			return err
		}); err != nil {
			return fmt.Errorf("consul: %w", err)
		}
	}
	for _, sel := range slices.Sorted(maps.Keys(wantRules)) {
		if _, ok := haveRules[sel]; ok {
			continue
		}
		if err := p.Do(reconcile.Create, "consul binding rule", sel, func() error {
			_, _, err := c.ACL().BindingRuleCreate(wantRules[sel], w)
			return err
		}); err != nil {
			return fmt.Errorf("consul: %w", err)
		}
	}
	return nil
}

// keysStatus says whether Consul trusts every key Nomad publishes, so that a
// rotation that up has not yet followed shows before identities fail.
func keysStatus(ctx context.Context, e *stages.Env, inv *inventory.Inventory) (stages.StatusLine, bool) {
	l := stages.StatusLine{Component: "nomad", State: "signing keys"}
	mgmt, ok, err := e.Secrets.Get(stages.SecretConsulBootstrapToken)
	if err != nil || !ok {
		return l, false
	}
	c, err := consulServer(ctx, e, inv, mgmt)
	if err != nil {
		return l, false
	}
	have, _, err := c.ACL().AuthMethodRead(consulAuthMethod, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil || have == nil {
		return l, false
	}
	keys, kids, err := signingKeys(ctx, e, inv)
	if err != nil {
		l.Detail = err.Error()
		return l, true
	}
	trusted := map[string]bool{}
	if list, ok := have.Config["JWTValidationPubKeys"].([]any); ok {
		for _, k := range list {
			trusted[fmt.Sprint(k)] = true
		}
	}
	var missing []string
	for i, k := range keys {
		if !trusted[k.(string)] {
			missing = append(missing, kids[i])
		}
	}
	if len(missing) > 0 {
		l.Detail = "consul does not trust key " + strings.Join(missing, ", ") + ": run up"
		return l, true
	}
	l.Healthy, l.Detail = true, "consul trusts all "+fmt.Sprint(len(keys))
	return l, true
}
