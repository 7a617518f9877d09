package nomad

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// SecretPrometheusToken is the token Prometheus scrapes Nomad's metrics with.
const SecretPrometheusToken = "nomad/tokens/prometheus"

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

// DeployNamespaces are the application namespaces that get a CI deploy token.
func DeployNamespaces(cfg *config.Platform) []string {
	if len(cfg.Nomad.DeployNamespaces) > 0 {
		return cfg.Nomad.DeployNamespaces
	}
	return cfg.Nomad.Namespaces
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
	for _, ns := range DeployNamespaces(cfg) {
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
		{"prometheus", SecretPrometheusToken, []string{"prometheus-metrics"}},
	}
	for _, ns := range DeployNamespaces(cfg) {
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
	if have.Description != n.description {
		return "description"
	}
	var drivers []string
	if have.Capabilities != nil {
		drivers = have.Capabilities.EnabledTaskDrivers
	}
	if !slices.Equal(sorted(drivers), sorted(n.drivers)) {
		return fmt.Sprintf("task drivers %v, want %v", drivers, n.drivers)
	}
	return ""
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

// readSelf checks the client's token, retrying errors other than a refusal
// (no leader yet, a server that just died) while the cluster elects one.
func readSelf(ctx context.Context, c *nomadapi.Client) error {
	return poll.Retry(ctx, 45*time.Second, time.Second, func() error {
		_, _, err := c.ACLTokens().Self((&nomadapi.QueryOptions{}).WithContext(ctx))
		return err
	}, isPermissionDenied)
}

func bootstrapDone(err error) bool {
	return err != nil && strings.Contains(err.Error(), "bootstrap already done")
}

// bootstrapACL generates the management token's secret, stores it, and then
// bootstraps with it: never a bootstrapped cluster whose token was lost.
func bootstrapACL(ctx context.Context, e *stages.Env, server inventory.Node) (string, error) {
	mgmt, created, err := e.Secrets.GetOrCreate(stages.SecretNomadBootstrapToken, secrets.NewUUID)
	if err != nil {
		return "", err
	}
	c, err := Client(e, server, mgmt)
	if err != nil {
		return "", err
	}
	if !created {
		err := readSelf(ctx, c)
		if err == nil {
			return mgmt, nil
		}
		if !isPermissionDenied(err) {
			return "", fmt.Errorf("nomad: check the bootstrap token: %w", err)
		}
	}
	crashpoint.Hit("nomad:before-acl-bootstrap")
	e.Step("bootstrapping nomad ACLs")
	// Right after a leader election the ACL system may not be ready yet.
	err = poll.Retry(ctx, time.Minute, time.Second, func() error {
		_, _, err := c.ACLTokens().BootstrapOpts(mgmt, (&nomadapi.WriteOptions{}).WithContext(ctx))
		return err
	}, bootstrapDone)
	if bootstrapDone(err) {
		if readSelf(ctx, c) != nil {
			return "", fmt.Errorf("%w: the stored token %s is not valid; reset the bootstrap (https://developer.hashicorp.com/nomad/docs/secure/acl/bootstrap#re-bootstrap-acl-system) and put the new management token there", ErrLockedOut, e.Secrets.Path(stages.SecretNomadBootstrapToken))
		}
		err = nil // an earlier run bootstrapped and stopped
	}
	if err != nil {
		return "", fmt.Errorf("nomad ACL bootstrap: %w", err)
	}
	crashpoint.Hit("nomad:after-acl-bootstrap")
	return mgmt, nil
}

// planACL lists differences in namespaces, policies, tokens, Vault KV copies
// and Vault's JWT configuration.
func planACL(ctx context.Context, e *stages.Env, d *deps, as []agentState) ([]stages.Change, error) {
	all := []stages.Change{{Action: "bootstrap", Target: "nomad ACLs", Detail: "token generated and stored first"}}
	for _, ns := range slices.Sorted(maps.Keys(namespaces(e.Config))) {
		all = append(all, stages.Change{Action: "create", Target: "nomad namespace " + ns})
	}
	mgmt, ok, err := e.Secrets.Get(stages.SecretNomadBootstrapToken)
	if err != nil {
		return nil, err
	}
	if !ok {
		return all, nil
	}
	server := d.inv.WithRole(inventory.RoleServer)[0]
	for _, a := range as {
		if a.up() && a.node.Has(inventory.RoleServer) {
			server = a.node
			break
		}
	}
	c, err := Client(e, server, mgmt)
	if err != nil {
		return nil, err
	}
	q := (&nomadapi.QueryOptions{}).WithContext(ctx)
	if err := readSelf(ctx, c); err != nil {
		if isPermissionDenied(err) {
			return all, nil // stored, not bootstrapped yet
		}
		return nil, fmt.Errorf("nomad: check the bootstrap token: %w", err)
	}
	var out []stages.Change
	nss, _, err := c.Namespaces().List(q)
	if err != nil {
		return nil, fmt.Errorf("nomad: list namespaces: %w", err)
	}
	haveNS := map[string]*nomadapi.Namespace{}
	for _, ns := range nss {
		haveNS[ns.Name] = ns
	}
	want := namespaces(e.Config)
	for _, name := range slices.Sorted(maps.Keys(want)) {
		h, ok := haveNS[name]
		if !ok {
			out = append(out, stages.Change{Action: "create", Target: "nomad namespace " + name})
		} else if d := want[name].differs(h); d != "" {
			out = append(out, stages.Change{Action: "update", Target: "nomad namespace " + name, Detail: d})
		}
	}
	pols := Policies(e.Config)
	for _, name := range slices.Sorted(maps.Keys(pols)) {
		p, _, err := c.ACLPolicies().Info(name, q)
		switch {
		case err != nil && strings.Contains(err.Error(), "404"):
			out = append(out, stages.Change{Action: "create", Target: "nomad policy " + name})
		case err != nil:
			return nil, fmt.Errorf("nomad: read policy %s: %w", name, err)
		case norm(p.Rules) != norm(pols[name]):
			out = append(out, stages.Change{Action: "update", Target: "nomad policy " + name, Detail: "rules differ"})
		}
	}
	have, err := listTokens(c, q)
	if err != nil {
		return nil, err
	}
	vc, err := vaultClient(ctx, e, d)
	if err != nil {
		return nil, err
	}
	staleTokens, stalePolicies, err := stale(c, q, e.Config, have)
	if err != nil {
		return nil, err
	}
	for _, t := range staleTokens {
		out = append(out, stages.Change{Action: "delete", Target: "nomad token " + strings.TrimPrefix(t.Name, "bootstrap: "), Detail: "no longer wanted: revoked"})
	}
	for _, name := range stalePolicies {
		out = append(out, stages.Change{Action: "delete", Target: "nomad policy " + name, Detail: "no longer wanted"})
	}
	for _, t := range tokens(e.Config) {
		h, ok := have[t.displayName()]
		if !ok {
			out = append(out, stages.Change{Action: "create", Target: "nomad token " + t.name})
			continue
		}
		if !slices.Equal(sorted(h.Policies), sorted(t.policies)) {
			out = append(out, stages.Change{Action: "update", Target: "nomad token " + t.name, Detail: "policies"})
		}
		secret, ok, err := e.Secrets.Get(t.secret)
		if err != nil {
			return nil, err
		}
		if !ok {
			out = append(out, stages.Change{Action: "store", Target: "nomad token " + t.name, Detail: "secret not in the store"})
			continue
		}
		if differs, err := pki.KVDiffers(ctx, vc, t.secret, secret); err != nil {
			return nil, err
		} else if differs {
			out = append(out, stages.Change{Action: "update", Target: "vault kv " + pki.KVPath(t.secret)})
		}
	}
	if differs, err := pki.KVDiffers(ctx, vc, stages.SecretNomadBootstrapToken, mgmt); err != nil {
		return nil, err
	} else if differs {
		out = append(out, stages.Change{Action: "update", Target: "vault kv " + pki.KVPath(stages.SecretNomadBootstrapToken)})
	}
	jwt, err := planJWT(ctx, e, d, vc)
	if err != nil {
		return nil, err
	}
	wi := &reconcile.Plan{}
	if err := consulWI(ctx, e, d.inv, wi); err != nil {
		return nil, err
	}
	return append(append(out, jwt...), wi.Changes...), nil
}

// stale finds the tokens and policies bootstrap made that the configuration
// no longer wants.
func stale(c *nomadapi.Client, q *nomadapi.QueryOptions, cfg *config.Platform, have map[string]*nomadapi.ACLTokenListStub) ([]*nomadapi.ACLTokenListStub, []string, error) {
	wantTok := map[string]bool{}
	for _, t := range tokens(cfg) {
		wantTok[t.displayName()] = true
	}
	var toks []*nomadapi.ACLTokenListStub
	for _, name := range slices.Sorted(maps.Keys(have)) {
		if !wantTok[name] {
			toks = append(toks, have[name])
		}
	}
	list, _, err := c.ACLPolicies().List(q)
	if err != nil {
		return nil, nil, fmt.Errorf("nomad: list policies: %w", err)
	}
	wantPol := Policies(cfg)
	var pols []string
	for _, p := range list {
		if _, ok := wantPol[p.Name]; !ok && p.Description == "bootstrap" {
			pols = append(pols, p.Name)
		}
	}
	slices.Sort(pols)
	return toks, pols, nil
}

func sorted(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
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

func vaultClient(ctx context.Context, e *stages.Env, d *deps) (*vaultapi.Client, error) {
	tok, err := pki.Token(ctx, e, d.vault)
	if err != nil {
		return nil, err
	}
	c, err := d.vault.Clone()
	if err != nil {
		return nil, err
	}
	c.SetToken(tok)
	return c, nil
}

// applyACL converges namespaces, policies, tokens and Vault's JWT trust.
func applyACL(ctx context.Context, e *stages.Env, d *deps, mgmt string) error {
	c, err := Client(e, d.inv.WithRole(inventory.RoleServer)[0], mgmt)
	if err != nil {
		return err
	}
	q := (&nomadapi.QueryOptions{}).WithContext(ctx)
	w := (&nomadapi.WriteOptions{}).WithContext(ctx)
	nss, _, err := c.Namespaces().List(q)
	if err != nil {
		return fmt.Errorf("nomad: list namespaces: %w", err)
	}
	haveNS := map[string]*nomadapi.Namespace{}
	for _, ns := range nss {
		haveNS[ns.Name] = ns
	}
	want := namespaces(e.Config)
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if h, ok := haveNS[name]; ok && want[name].differs(h) == "" {
			continue
		}
		e.Step("writing nomad namespace %s", name)
		if _, err := c.Namespaces().Register(want[name].api(name), w); err != nil {
			return fmt.Errorf("nomad: namespace %s: %w", name, err)
		}
	}
	pols := Policies(e.Config)
	for _, name := range slices.Sorted(maps.Keys(pols)) {
		p, _, err := c.ACLPolicies().Info(name, q)
		if err == nil && norm(p.Rules) == norm(pols[name]) {
			continue
		}
		e.Step("writing nomad policy %s", name)
		if _, err := c.ACLPolicies().Upsert(&nomadapi.ACLPolicy{Name: name, Description: "bootstrap", Rules: pols[name]}, w); err != nil {
			return fmt.Errorf("nomad: policy %s: %w", name, err)
		}
	}
	have, err := listTokens(c, q)
	if err != nil {
		return err
	}
	vc, err := vaultClient(ctx, e, d)
	if err != nil {
		return err
	}
	for _, t := range tokens(e.Config) {
		secret, err := ensureToken(ctx, e, c, have, t)
		if err != nil {
			return err
		}
		if err := pki.StoreKV(ctx, vc, t.secret, secret); err != nil {
			return err
		}
	}
	// Tokens bootstrap made and no longer wants (the single CI token of
	// earlier versions, a namespace removed from the config) are revoked,
	// with their copies, before their policies go.
	staleTokens, stalePolicies, err := stale(c, q, e.Config, have)
	if err != nil {
		return err
	}
	for _, t := range staleTokens {
		name := strings.TrimPrefix(t.Name, "bootstrap: ")
		e.Step("revoking nomad token %s", name)
		if _, err := c.ACLTokens().Delete(t.AccessorID, w); err != nil {
			return fmt.Errorf("nomad: revoke token %s: %w", name, err)
		}
		secret := "nomad/tokens/" + name
		if _, err := vc.Logical().DeleteWithContext(ctx, pki.KVMetadataPath(secret)); err != nil {
			return fmt.Errorf("vault: delete %s: %w", pki.KVMetadataPath(secret), err)
		}
		if err := e.Secrets.Delete(secret); err != nil {
			return err
		}
	}
	for _, name := range stalePolicies {
		e.Step("deleting nomad policy %s", name)
		if _, err := c.ACLPolicies().Delete(name, w); err != nil {
			return fmt.Errorf("nomad: delete policy %s: %w", name, err)
		}
	}
	if err := pki.StoreKV(ctx, vc, stages.SecretNomadBootstrapToken, mgmt); err != nil {
		return err
	}
	if err := applyJWT(ctx, e, d, vc); err != nil {
		return err
	}
	return consulWI(ctx, e, d.inv, e.Plan(true))
}

// ensureToken creates a token, or finds it by name, and keeps its secret.
// Nomad chooses token secrets itself, so a run killed after creating one
// finds it by name and reads the secret back with the management token.
func ensureToken(ctx context.Context, e *stages.Env, c *nomadapi.Client, have map[string]*nomadapi.ACLTokenListStub, t token) (string, error) {
	q := (&nomadapi.QueryOptions{}).WithContext(ctx)
	w := (&nomadapi.WriteOptions{}).WithContext(ctx)
	h, ok := have[t.displayName()]
	if !ok {
		e.Step("creating nomad token %s", t.name)
		created, _, err := c.ACLTokens().Create(&nomadapi.ACLToken{Name: t.displayName(), Type: "client", Policies: t.policies, Global: true}, w)
		if err != nil {
			return "", fmt.Errorf("nomad: create token %s: %w", t.name, err)
		}
		crashpoint.Hit("nomad:after-token-create")
		return created.SecretID, e.Secrets.Put(t.secret, created.SecretID)
	}
	full, _, err := c.ACLTokens().Info(h.AccessorID, q)
	if err != nil {
		return "", fmt.Errorf("nomad: read token %s: %w", t.name, err)
	}
	if !slices.Equal(sorted(full.Policies), sorted(t.policies)) {
		e.Step("updating nomad token %s", t.name)
		full.Policies = t.policies
		if _, _, err := c.ACLTokens().Update(full, w); err != nil {
			return "", fmt.Errorf("nomad: update token %s: %w", t.name, err)
		}
	}
	if stored, ok, err := e.Secrets.Get(t.secret); err != nil {
		return "", err
	} else if !ok || stored != full.SecretID {
		if err := e.Secrets.Put(t.secret, full.SecretID); err != nil {
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
	ca, err := os.ReadFile(CAFile(e))
	if err != nil {
		return nil, nil, err
	}
	// Every server serves the same keys: Vault tries each, so workload
	// logins survive any one server being down.
	var pairs []any
	for _, n := range d.inv.WithRole(inventory.RoleServer) {
		pairs = append(pairs, map[string]any{"jwks_url": Addr(n) + "/.well-known/jwks.json", "jwks_ca_pem": string(ca)})
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

// jwtDiffers compares the fields bootstrap sets with what Vault returns.
func jwtDiffers(have *vaultapi.Secret, want map[string]any) bool {
	if have == nil || have.Data == nil {
		return true
	}
	for k, w := range want {
		h := have.Data[k]
		if norm(fmt.Sprint(flatten(h))) != norm(fmt.Sprint(flatten(w))) {
			return true
		}
	}
	return false
}

// flatten renders values the way Vault returns them (lists as []any, numbers
// as json.Number) comparable with what we send.
func flatten(v any) any {
	switch t := v.(type) {
	case []string:
		out := make([]any, len(t))
		for i, s := range t {
			out[i] = s
		}
		return out
	case map[string]any:
		keys := make([]string, 0, len(t))
		for k := range t {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%v;", k, t[k])
		}
		return b.String()
	case string:
		return strings.TrimSpace(t)
	}
	return fmt.Sprint(v)
}

func planJWT(ctx context.Context, e *stages.Env, d *deps, vc *vaultapi.Client) ([]stages.Change, error) {
	cfg, role, err := jwtWant(e, d)
	if err != nil {
		return nil, err
	}
	var out []stages.Change
	have, err := vc.Logical().ReadWithContext(ctx, jwtConfigPath)
	if err != nil {
		return nil, fmt.Errorf("vault: read %s: %w", jwtConfigPath, err)
	}
	if jwtDiffers(have, cfg) {
		out = append(out, stages.Change{Action: "update", Target: "vault " + jwtConfigPath, Detail: "trust Nomad's workload identities"})
	}
	have, err = vc.Logical().ReadWithContext(ctx, jwtRolePath)
	if err != nil {
		return nil, fmt.Errorf("vault: read %s: %w", jwtRolePath, err)
	}
	if jwtDiffers(have, role) {
		out = append(out, stages.Change{Action: "update", Target: "vault " + jwtRolePath})
	}
	return out, nil
}

func applyJWT(ctx context.Context, e *stages.Env, d *deps, vc *vaultapi.Client) error {
	cfg, role, err := jwtWant(e, d)
	if err != nil {
		return err
	}
	for _, w := range []struct {
		path string
		data map[string]any
	}{{jwtConfigPath, cfg}, {jwtRolePath, role}} {
		have, err := vc.Logical().ReadWithContext(ctx, w.path)
		if err != nil {
			return fmt.Errorf("vault: read %s: %w", w.path, err)
		}
		if !jwtDiffers(have, w.data) {
			continue
		}
		e.Step("writing vault %s", w.path)
		if _, err := vc.Logical().WriteWithContext(ctx, w.path, w.data); err != nil {
			return fmt.Errorf("vault: write %s: %w", w.path, err)
		}
	}
	return nil
}
