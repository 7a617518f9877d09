package cluster

import (
	"context"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Vault returns a copy of vc that carries bootstrap's Vault admin token:
// the Consul and Nomad stages keep copies of their tokens in Vault KV.
func Vault(ctx context.Context, e *stages.Env, vc *vaultapi.Client) (*vaultapi.Client, error) {
	tok, err := pki.Token(ctx, e, vc)
	if err != nil {
		return nil, err
	}
	c, err := vc.Clone()
	if err != nil {
		return nil, err
	}
	c.SetToken(tok)
	return c, nil
}

// CopyToKV records, and makes when p applies, the Vault KV copy of secret
// name when it differs from value.
func CopyToKV(ctx context.Context, p *reconcile.Plan, vc *vaultapi.Client, name, value string) error {
	differs, err := pki.KVDiffers(ctx, vc, name, value)
	if err != nil || !differs {
		return err
	}
	return p.Do(reconcile.Update, "vault kv "+pki.KVPath(name), "", func() error { return pki.StoreKV(ctx, vc, name, value) })
}
