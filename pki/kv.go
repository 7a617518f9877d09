package pki

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
)

// KVPath is where StoreKV keeps the copy of a secret named name (a name of
// the secret store, such as "vault/tokens/consul-template-server").
func KVPath(name string) string { return KVMount + "/data/" + KVPrefix + "/" + name }

// KVMetadataPath is the metadata path of KVPath(name): deleting it removes
// every version of the copy.
func KVMetadataPath(name string) string { return KVMount + "/metadata/" + KVPrefix + "/" + name }

// KVDiffers reports whether the copy of secret name in Vault KV is missing
// or holds another value. It only reads.
func KVDiffers(ctx context.Context, c *api.Client, name, value string) (bool, error) {
	s, err := c.Logical().ReadWithContext(ctx, KVPath(name))
	if err != nil && !isNotFound(err) {
		return false, fmt.Errorf("read %s: %w", KVPath(name), err)
	}
	if s == nil || s.Data == nil {
		return true, nil
	}
	data, _ := s.Data["data"].(map[string]any)
	return str(data, "value") != value, nil
}

// StoreKV copies secret name into Vault KV (secret/bootstrap/<name>), writing
// only when the stored copy differs, so a converged run writes nothing.
func StoreKV(ctx context.Context, c *api.Client, name, value string) error {
	differs, err := KVDiffers(ctx, c, name, value)
	if err != nil || !differs {
		return err
	}
	return writeKV(ctx, c, name, value)
}

func writeKV(ctx context.Context, c *api.Client, name, value string) error {
	if _, err := c.Logical().WriteWithContext(ctx, KVPath(name), map[string]any{
		"data": map[string]any{"value": value},
	}); err != nil {
		return fmt.Errorf("write %s: %w", KVPath(name), err)
	}
	return nil
}

// kv keeps the KV copy of a secret the reconciler manages. known is false
// while planning a secret that is yet to be made.
func (r *reconciler) kv(ctx context.Context, name, value string, known bool) error {
	target := "vault kv " + KVMount + "/" + KVPrefix + "/" + name
	if !r.mounted(KVMount) {
		r.planned("create", target, "")
		return nil
	}
	s, err := r.c.Logical().ReadWithContext(ctx, KVPath(name))
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("read %s: %w", KVPath(name), err)
	}
	action := reconcile.Update
	if s == nil || s.Data == nil {
		action = reconcile.Create
	} else if data, _ := s.Data["data"].(map[string]any); known && str(data, "value") == value {
		return nil
	}
	if !known {
		if r.plan.Apply {
			return fmt.Errorf("%s: value unknown", target)
		}
		r.planned(action, target, "")
		return nil
	}
	return r.change(action, target, "", func() error {
		return writeKV(ctx, r.c, name, value)
	})
}
