package nomad

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"

	nomadapi "github.com/hashicorp/nomad/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// deployCapabilities is what the CI deploy token may do in its namespaces:
// validate, plan, register, revert and follow jobs — no exec into
// allocations, no node or ACL access.
var deployCapabilities = []string{"list-jobs", "parse-job", "read-job", "submit-job", "dispatch-job", "read-logs", "read-fs"}

func quote(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// DeployPolicy is the name of the policy of namespace ns's CI deploy token.
func DeployPolicy(ns string) string { return "ci-deploy-" + ns }

// Policies returns the platform's Nomad ACL policies. Each deploy namespace
// has its own policy and token. None of them grants host_volume or
// anything outside its namespace: only the management token, which submits
// the platform's jobs, may mount a host volume.
func Policies(cfg *config.Platform) map[string]string {
	out := map[string]string{
		"ui-read": `namespace "*" {
  policy = "read"
}
node {
  policy = "read"
}
agent {
  policy = "read"
}
operator {
  policy = "read"
}
plugin {
  policy = "read"
}
`,
		"prometheus-metrics": `agent {
  policy = "read"
}
node {
  policy = "read"
}
namespace "*" {
  capabilities = ["list-jobs", "read-job"]
}
`,
	}
	for _, ns := range stages.DeployNamespaces(cfg) {
		out[DeployPolicy(ns)] = fmt.Sprintf("namespace %q {\n  capabilities = [%s]\n}\n", ns, quote(deployCapabilities))
	}
	return out
}

type token struct {
	name, secret string
	policies     []string
}

func (t token) displayName() string { return "bootstrap: " + t.name }

// tokens are the client tokens bootstrap keeps: one deploy token per
// application namespace, the UI's read-only token and Prometheus's.
func tokens(cfg *config.Platform) []token {
	out := []token{
		{"ui-read", stages.SecretNomadUIToken, []string{"ui-read"}},
		{"prometheus", stages.SecretNomadPrometheusToken, []string{"prometheus-metrics"}},
	}
	for _, ns := range stages.DeployNamespaces(cfg) {
		out = append(out, token{"ci-" + ns, stages.SecretNomadDeployToken(ns), []string{DeployPolicy(ns)}})
	}
	return out
}

// AppDrivers are the task drivers an application namespace may use: those
// that isolate a task from the host. docker runs it in a container without
// host bind mounts (the clients disable them); exec runs it as nobody in a
// chroot of its own allocation directory. raw_exec, which runs a task as the
// client's user with the host's files, is left to "general".
var AppDrivers = []string{"docker", "exec"}

// namespaceSpec is what bootstrap sets on a namespace.
type namespaceSpec struct {
	description string
	drivers     []string // enabled task drivers; nil: any
}

func (n namespaceSpec) api(name string) *nomadapi.Namespace {
	ns := &nomadapi.Namespace{Name: name, Description: n.description}
	if n.drivers != nil {
		ns.Capabilities = &nomadapi.NamespaceCapabilities{EnabledTaskDrivers: n.drivers}
	}
	return ns
}

// differs says what about a live namespace is not as wanted ("" if nothing).
func (n namespaceSpec) differs(have *nomadapi.Namespace) string {
	var drivers []string
	if have.Capabilities != nil {
		drivers = have.Capabilities.EnabledTaskDrivers
	}
	return strings.Join(reconcile.Differences(
		map[string]any{"description": have.Description, "task drivers": drivers},
		map[string]any{"description": n.description, "task drivers": n.drivers}), "; ")
}

// namespaces returns the wanted namespaces.
func namespaces(cfg *config.Platform) map[string]namespaceSpec {
	out := map[string]namespaceSpec{config.GeneralNamespace: {description: "Platform jobs: ingress, monitoring, CI runners"}}
	for _, ns := range cfg.Nomad.Namespaces {
		out[ns] = namespaceSpec{description: "Applications (" + ns + ")", drivers: AppDrivers}
	}
	return out
}

func norm(s string) string { return strings.Join(strings.Fields(s), " ") }

func isPermissionDenied(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "403") || strings.Contains(err.Error(), "ACL token not found") || strings.Contains(err.Error(), "Permission denied"))
}

func bootstrapDone(err error) bool {
	return err != nil && strings.Contains(err.Error(), "bootstrap already done")
}

// acl is Nomad's ACL system seen with one token (cluster.ACL).
type acl struct {
	c     *nomadapi.Client
	token string
}

func (a acl) Self(ctx context.Context) error {
	_, _, err := a.c.ACLTokens().Self((&nomadapi.QueryOptions{}).WithContext(ctx))
	return err
}

func (a acl) Bootstrap(ctx context.Context) error {
	_, _, err := a.c.ACLTokens().BootstrapOpts(a.token, (&nomadapi.WriteOptions{}).WithContext(ctx))
	return err
}

// convergeACL bootstraps the ACL system crash-safely and converges
// namespaces, policies, tokens, their Vault KV copies, Vault's JWT trust
// and Consul's trust in Nomad's service identities.
func convergeACL(ctx context.Context, e *stages.Env, d *deps, as cluster.Agents, p *reconcile.Plan) error {
	server := as.Server()
	mgmt, ok, err := cluster.Bootstrap{
		Name:   "nomad",
		Secret: stages.SecretNomadBootstrapToken,
		Client: func(token string) (cluster.ACL, error) {
			c, err := cluster.NomadAgent(e, server, token)
			return acl{c, token}, err
		},
		Denied:    isPermissionDenied,
		Done:      bootstrapDone,
		LockedOut: ErrLockedOut,
		ResetURL:  "https://developer.hashicorp.com/nomad/docs/secure/acl/bootstrap#re-bootstrap-acl-system",
	}.Run(ctx, e.Secrets, p)
	if err != nil {
		return err
	}
	if !ok {
		for _, ns := range slices.Sorted(maps.Keys(namespaces(e.Config))) {
			p.Planned(reconcile.Create, "nomad namespace "+ns, "")
		}
		return nil
	}
	if p.Apply {
		if err := waitCaughtUp(ctx, e, d.inv, mgmt); err != nil {
			return err
		}
	}
	if snap, ok := e.RestoreSnapshot("nomad"); ok {
		if err := p.Do(reconcile.Restore, "nomad", restoreDetail, func() error { return restore(ctx, e, d.inv, server, mgmt, snap) }); err != nil {
			return err
		}
	}
	c, err := cluster.NomadAgent(e, server, mgmt)
	if err != nil {
		return err
	}
	q := (&nomadapi.QueryOptions{}).WithContext(ctx)
	w := (&nomadapi.WriteOptions{}).WithContext(ctx)
	if err := convergeNamespaces(e, c, q, w, p); err != nil {
		return err
	}
	pols := Policies(e.Config)
	for _, name := range slices.Sorted(maps.Keys(pols)) {
		upsert := func() error {
			_, err := c.ACLPolicies().Upsert(&nomadapi.ACLPolicy{Name: name, Description: "bootstrap", Rules: pols[name]}, w)
			return err
		}
		h, _, err := c.ACLPolicies().Info(name, q)
		switch {
		case err != nil && strings.Contains(err.Error(), "404"):
			err = p.Do(reconcile.Create, "nomad policy "+name, "", upsert)
		case err != nil:
			err = fmt.Errorf("read policy %s: %w", name, err)
		case norm(h.Rules) != norm(pols[name]):
			err = p.Do(reconcile.Update, "nomad policy "+name, "rules differ", upsert)
		}
		if err != nil {
			return fmt.Errorf("nomad: %w", err)
		}
	}
	if mgmt, err = rotateTokens(ctx, e, c, p, mgmt); err != nil {
		return err
	}
	have, err := listTokens(c, q)
	if err != nil {
		return err
	}
	vc, err := cluster.Vault(ctx, e, d.vault)
	if err != nil {
		return err
	}
	for _, t := range tokens(e.Config) {
		secret, err := ensureToken(e, c, q, w, p, have, t)
		if err != nil {
			return err
		}
		if secret == "" {
			continue // planned: the token is yet to be made
		}
		if err := e.EndTokenRotation(p.Apply, t.name); err != nil {
			return err
		}
		if err := cluster.CopyToKV(ctx, p, vc, t.secret, secret); err != nil {
			return err
		}
	}
	if err := deleteStale(ctx, e, c, q, w, p, vc, have); err != nil {
		return err
	}
	if err := cluster.CopyToKV(ctx, p, vc, stages.SecretNomadBootstrapToken, mgmt); err != nil {
		return err
	}
	if err := convergeJWT(ctx, e, d, vc, p); err != nil {
		return err
	}
	if err := consulWI(ctx, e, d.inv, p); err != nil {
		return err
	}
	addrs := map[string]string{}
	for _, n := range pki.ConsulTemplateNodes(d.inv) {
		addrs[n.Name] = net.JoinHostPort(n.APIAddress(), fmt.Sprint(stages.NomadHTTPPort))
	}
	if err := cluster.RetireOldCAs(ctx, p, vc, "nomad", e.CAFile("nomad"), addrs); err != nil {
		return err
	}
	if p.Apply {
		return waitClients(ctx, e, d.inv, mgmt)
	}
	return nil
}

func convergeNamespaces(e *stages.Env, c *nomadapi.Client, q *nomadapi.QueryOptions, w *nomadapi.WriteOptions, p *reconcile.Plan) error {
	nss, _, err := c.Namespaces().List(q)
	if err != nil {
		return fmt.Errorf("nomad: list namespaces: %w", err)
	}
	have := map[string]*nomadapi.Namespace{}
	for _, ns := range nss {
		have[ns.Name] = ns
	}
	want := namespaces(e.Config)
	for _, name := range slices.Sorted(maps.Keys(want)) {
		register := func() error {
			_, err := c.Namespaces().Register(want[name].api(name), w)
			return err
		}
		h, ok := have[name]
		if !ok {
			err = p.Do(reconcile.Create, "nomad namespace "+name, "", register)
		} else if diff := want[name].differs(h); diff != "" {
			err = p.Do(reconcile.Update, "nomad namespace "+name, diff, register)
		}
		if err != nil {
			return fmt.Errorf("nomad: %w", err)
		}
	}
	return nil
}

// deleteStale revokes the tokens bootstrap made and the configuration no
// longer wants (the single CI token of earlier versions, a namespace
// removed from the config), with their copies, before their policies go.
func deleteStale(ctx context.Context, e *stages.Env, c *nomadapi.Client, q *nomadapi.QueryOptions, w *nomadapi.WriteOptions, p *reconcile.Plan, vc *vaultapi.Client, have map[string]*nomadapi.ACLTokenListStub) error {
	wantTok := map[string]bool{}
	for _, t := range tokens(e.Config) {
		wantTok[t.displayName()] = true
	}
	for _, display := range slices.Sorted(maps.Keys(have)) {
		if wantTok[display] || display == managementName {
			continue
		}
		name := strings.TrimPrefix(display, "bootstrap: ")
		secret := "nomad/tokens/" + name
		if err := p.Do(reconcile.Delete, "nomad token "+name, "no longer wanted: revoked", func() error {
			if _, err := c.ACLTokens().Delete(have[display].AccessorID, w); err != nil {
				return err
			}
			if _, err := vc.Logical().DeleteWithContext(ctx, pki.KVMetadataPath(secret)); err != nil {
				return fmt.Errorf("vault: delete %s: %w", pki.KVMetadataPath(secret), err)
			}
			return e.Secrets.Delete(secret)
		}); err != nil {
			return fmt.Errorf("nomad: %w", err)
		}
	}
	list, _, err := c.ACLPolicies().List(q)
	if err != nil {
		return fmt.Errorf("nomad: list policies: %w", err)
	}
	slices.SortFunc(list, func(a, b *nomadapi.ACLPolicyListStub) int { return strings.Compare(a.Name, b.Name) })
	wantPol := Policies(e.Config)
	for _, pol := range list {
		if _, ok := wantPol[pol.Name]; ok || pol.Description != "bootstrap" {
			continue
		}
		if err := p.Do(reconcile.Delete, "nomad policy "+pol.Name, "no longer wanted", func() error {
			_, err := c.ACLPolicies().Delete(pol.Name, w)
			return err
		}); err != nil {
			return fmt.Errorf("nomad: %w", err)
		}
	}
	return nil
}

func listTokens(c *nomadapi.Client, q *nomadapi.QueryOptions) (map[string]*nomadapi.ACLTokenListStub, error) {
	list, _, err := c.ACLTokens().List(q)
	if err != nil {
		return nil, fmt.Errorf("nomad: list tokens: %w", err)
	}
	out := map[string]*nomadapi.ACLTokenListStub{}
	for _, t := range list {
		if strings.HasPrefix(t.Name, "bootstrap: ") {
			out[t.Name] = t
		}
	}
	return out, nil
}

// ensureToken creates a token, or finds it by name, keeps its secret and
// returns it ("" while its creation is planned). Nomad chooses token
// secrets itself, so a run killed after creating one finds it by name and
// reads the secret back with the management token.
func ensureToken(e *stages.Env, c *nomadapi.Client, q *nomadapi.QueryOptions, w *nomadapi.WriteOptions, p *reconcile.Plan, have map[string]*nomadapi.ACLTokenListStub, t token) (string, error) {
	target := "nomad token " + t.name
	h, ok := have[t.displayName()]
	if !ok {
		var secret string
		err := p.Do(reconcile.Create, target, "", func() error {
			created, _, err := c.ACLTokens().Create(&nomadapi.ACLToken{Name: t.displayName(), Type: "client", Policies: t.policies, Global: true}, w)
			if err != nil {
				return err
			}
			crashpoint.Hit("nomad:after-token-create")
			secret = created.SecretID
			return e.Secrets.Put(t.secret, secret)
		})
		if err != nil {
			return "", fmt.Errorf("nomad: %w", err)
		}
		return secret, nil
	}
	full, _, err := c.ACLTokens().Info(h.AccessorID, q)
	if err != nil {
		return "", fmt.Errorf("nomad: read token %s: %w", t.name, err)
	}
	if diff := reconcile.Differences(map[string]any{"policies": full.Policies}, map[string]any{"policies": t.policies}); len(diff) > 0 {
		if err := p.Do(reconcile.Update, target, strings.Join(diff, "; "), func() error {
			full.Policies = t.policies
			_, _, err := c.ACLTokens().Update(full, w)
			return err
		}); err != nil {
			return "", fmt.Errorf("nomad: %w", err)
		}
	}
	stored, ok, err := e.Secrets.Get(t.secret)
	if err != nil {
		return "", err
	}
	if !ok || stored != full.SecretID {
		if err := p.Do(reconcile.Store, target, "secret not in the store", func() error { return e.Secrets.Put(t.secret, full.SecretID) }); err != nil {
			return "", err
		}
	}
	return full.SecretID, nil
}

// Vault trusts the workload identities Nomad signs: the JWT auth mount the
// pki stage enabled gets the servers' JWKS URLs and a role that maps a job's
// namespace and id into the nomad-workloads policy (`nomad setup vault`).
const (
	jwtConfigPath = "auth/jwt-nomad/config"
	jwtRolePath   = "auth/jwt-nomad/role/nomad-workloads"
)

func jwtWant(e *stages.Env, d *deps) (map[string]any, map[string]any, error) {
	ca, err := os.ReadFile(e.CAFile("nomad"))
	if err != nil {
		return nil, nil, err
	}
	// Every server serves the same keys: Vault tries each, so workload
	// logins survive any one server being down.
	var pairs []any
	for _, n := range d.inv.WithRole(inventory.RoleServer) {
		pairs = append(pairs, map[string]any{"jwks_url": stages.NomadAddr(n) + "/.well-known/jwks.json", "jwks_ca_pem": string(ca)})
	}
	cfg := map[string]any{
		"jwks_pairs":         pairs,
		"jwt_supported_algs": []string{"RS256", "EdDSA"},
		"default_role":       "nomad-workloads",
	}
	role := map[string]any{
		"role_type":               "jwt",
		"bound_audiences":         []string{"vault.io"},
		"user_claim":              "/nomad_job_id",
		"user_claim_json_pointer": true,
		"claim_mappings": map[string]any{
			"nomad_namespace": "nomad_namespace",
			"nomad_job_id":    "nomad_job_id",
			"nomad_task":      "nomad_task",
		},
		"token_type":     "service",
		"token_policies": []string{pki.PolicyNomadWorkloads},
		"token_period":   1800,
	}
	return cfg, role, nil
}

// convergeJWT writes Vault's JWT configuration and role where the fields
// bootstrap sets differ.
func convergeJWT(ctx context.Context, e *stages.Env, d *deps, vc *vaultapi.Client, p *reconcile.Plan) error {
	cfg, role, err := jwtWant(e, d)
	if err != nil {
		return err
	}
	for _, w := range []struct {
		path, detail string
		data         map[string]any
	}{{jwtConfigPath, "trust Nomad's workload identities", cfg}, {jwtRolePath, "", role}} {
		have, err := vc.Logical().ReadWithContext(ctx, w.path)
		if err != nil {
			return fmt.Errorf("vault: read %s: %w", w.path, err)
		}
		var fields map[string]any
		if have != nil {
			fields = have.Data
		}
		if len(reconcile.Differences(fields, w.data)) == 0 {
			continue
		}
		if err := p.Do(reconcile.Update, "vault "+w.path, w.detail, func() error {
			_, err := vc.Logical().WriteWithContext(ctx, w.path, w.data)
			return err
		}); err != nil {
			return fmt.Errorf("vault: %w", err)
		}
	}
	return nil
}
