// Package pki is the stage that turns the running Vault into the platform's
// certificate authority: the Consul and Nomad CAs with the roles
// consul-template issues agent certificates from, the application CAs of the
// configuration, policies, the consul-template tokens, AppRoles and the
// admin identity that replaces the root token. The work itself is in the
// top-level pki package; this stage connects it to the run.
package pki

import (
	"context"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	vaultpki "github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Stage is the pki stage.
type Stage struct{}

// New returns the pki stage.
func New() stages.Stage { return &Stage{} }

// Name is "pki".
func (*Stage) Name() string { return "pki" }

// Plan lists what Apply would change in Vault and the state directory.
func (*Stage) Plan(ctx context.Context, e *stages.Env) ([]stages.Change, error) {
	c, spec, err := connect(ctx, e)
	if err != nil {
		return stages.WithKnown(nil, err, func() []stages.Change { return knownChanges(e) })
	}
	res, err := vaultpki.Plan(ctx, c, e, spec)
	for _, w := range res.Warnings {
		e.Warnf("%s", w)
	}
	return res.Changes, err
}

// knownChanges is what a first run creates, as far as the configuration
// tells before Vault is up: the CAs' mounts and roles, the KV mount and the
// admin identity. Shown while the stage waits for the vault stage.
func knownChanges(e *stages.Env) []stages.Change {
	spec, err := vaultpki.FromConfig(e.Config, "")
	if err != nil {
		return nil
	}
	var out []stages.Change
	for _, ca := range spec.AllCAs() {
		for _, m := range ca.Mounts() {
			out = append(out, stages.Change{Action: reconcile.Create, Target: "vault mount " + m, Detail: "pki"})
		}
		for _, r := range ca.Roles {
			out = append(out, stages.Change{Action: reconcile.Create, Target: "vault role " + ca.RoleMount(r) + "/roles/" + r.Name})
		}
	}
	out = append(out,
		stages.Change{Action: reconcile.Create, Target: "vault mount " + vaultpki.KVMount, Detail: "kv"},
		stages.Change{Action: reconcile.Create, Target: "vault user " + vaultpki.UserpassPath + "/" + vaultpki.AdminUser},
	)
	for _, a := range spec.AppRoles {
		out = append(out, stages.Change{Action: reconcile.Create, Target: "vault approle " + a.Name + " secret id"})
	}
	return out
}

// Apply makes Vault's PKI match the configuration.
func (*Stage) Apply(ctx context.Context, e *stages.Env) error {
	c, spec, err := connect(ctx, e)
	if err != nil {
		return err
	}
	res, err := vaultpki.Apply(ctx, c, e, spec)
	for _, ch := range res.Changes {
		e.Logf("%s", ch)
	}
	return err
}

// connect returns a client for the Vault the vault stage recorded, carrying
// the admin token (or the root token before the admin identity exists).
func connect(ctx context.Context, e *stages.Env) (*api.Client, vaultpki.Spec, error) {
	addr := e.State.Output(stages.OutVaultAddr)
	if addr == "" {
		return nil, vaultpki.Spec{}, stages.NotReadyf("vault is not up yet")
	}
	spec, err := vaultpki.FromConfig(e.Config, addr)
	if err != nil {
		return nil, vaultpki.Spec{}, err
	}
	c, err := vaultpki.NewClient(addr, e.State.Output(stages.OutVaultCACert))
	if err != nil {
		return nil, vaultpki.Spec{}, err
	}
	tok, err := vaultpki.Token(ctx, e, c)
	if err != nil {
		return nil, vaultpki.Spec{}, err
	}
	c.SetToken(tok)
	return c, spec, nil
}
