package pki

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"

	"github.com/platform-bootstrap/bootstrap/stages"
)

// NewClient returns a Vault client for addr that trusts caFile (when set)
// and carries no token. Unlike api.DefaultConfig alone, the user's VAULT_*
// environment (a token, a namespace, VAULT_SKIP_VERIFY) does not leak in:
// bootstrap talks to the Vault it set up, nothing else.
func NewClient(addr, caFile string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("vault client: %w", cfg.Error)
	}
	cfg.Address = addr
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if caFile != "" {
		// Vault's certificates name vault.service.consul: verify that, not
		// the address dialled.
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: caFile, TLSServerName: apitls.VaultServerName}); err != nil {
			return nil, fmt.Errorf("vault client: CA %s: %w", caFile, err)
		}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	c.SetToken("")
	c.ClearNamespace()
	return c, nil
}

// ErrNoToken means no stored credential works any more: the admin token and
// password fail and the root token was revoked.
var ErrNoToken = errors.New("no working vault token")

// Token returns a token for administering Vault: the stored admin token, a
// fresh one from logging in with the stored admin password when it has
// expired, or the root token before the admin identity exists. client is
// only used to talk to Vault; its token is not changed.
func Token(ctx context.Context, e *stages.Env, client *api.Client) (string, error) {
	tok, ok, err := e.Secrets.Get(stages.SecretVaultAdminToken)
	if err != nil {
		return "", err
	}
	if ok {
		valid, err := tokenValid(ctx, client, tok, PolicyAdmin)
		if err != nil || valid {
			return tok, err
		}
	}
	pw, ok, err := e.Secrets.Get(stages.SecretVaultAdminPassword)
	if err != nil {
		return "", err
	}
	if ok {
		tok, err := login(ctx, client, pw)
		switch {
		case err == nil:
			if err := e.Secrets.Put(stages.SecretVaultAdminToken, tok); err != nil {
				return "", err
			}
			return tok, nil
		case !isLoginRefused(err):
			return "", err
		}
		// No admin user yet (a run stopped before creating it): the root
		// token still works.
	}
	// Asked even when recorded as revoked: an operator may have stored a
	// regenerated one.
	root, ok, err := e.Secrets.Get(stages.SecretVaultRootToken)
	if err != nil {
		return "", err
	}
	if ok {
		valid, err := tokenValid(ctx, client, root, "root")
		if err != nil || valid {
			return root, err
		}
	}
	return "", fmt.Errorf("%w: the admin token expired, logging in as %q with the stored password failed and the root token is revoked or missing; make a new root token from the unseal keys (`vault operator generate-root`), store it as %s and run again",
		ErrNoToken, AdminUser, e.Secrets.Path(stages.SecretVaultRootToken))
}
