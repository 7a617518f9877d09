package pki

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/poll"
)

// secretMount makes sure a secret engine of type typ is mounted at path with
// the given maximum lease TTL (0: leave Vault's default).
func (r *reconciler) secretMount(ctx context.Context, path, typ, desc string, maxTTL time.Duration, options map[string]string) error {
	target := "vault mount " + path
	m, ok := r.mounts[path+"/"]
	if !ok {
		detail := typ
		if maxTTL > 0 {
			detail += ", max ttl " + fmtDuration(maxTTL)
		}
		return r.change("create", target, detail, func() error {
			in := &api.MountInput{Type: typ, Description: desc, Options: options}
			if maxTTL > 0 {
				in.Config.MaxLeaseTTL = seconds(maxTTL)
			}
			err := r.c.Sys().MountWithContext(ctx, path, in)
			if err != nil && !hasError(err, "path is already in use") {
				return err
			}
			// Later steps read under the new mount.
			r.mounts[path+"/"] = &api.MountOutput{Type: typ, Options: options}
			return nil
		})
	}
	if m.Type != typ {
		return fmt.Errorf("vault mount %s is a %q engine, not %q: bootstrap will not replace it; move it with `vault secrets move %s OTHER` and run again", path, m.Type, typ, path)
	}
	for k, want := range options {
		if got := m.Options[k]; got != want {
			return fmt.Errorf("vault mount %s has option %s=%q, want %q: upgrade it by hand (for KV: `vault kv enable-versioning %s`) and run again", path, k, got, want, path)
		}
	}
	if maxTTL > 0 && time.Duration(m.Config.MaxLeaseTTL)*time.Second != maxTTL {
		detail := fmt.Sprintf("max ttl %s → %s", fmtDuration(time.Duration(m.Config.MaxLeaseTTL)*time.Second), fmtDuration(maxTTL))
		return r.change("update", target, detail, func() error {
			ttl := seconds(maxTTL)
			return r.c.Sys().TuneMountAllowNilWithContext(ctx, path, api.TuneMountConfigInput{MaxLeaseTTL: &ttl})
		})
	}
	return nil
}

func (r *reconciler) kvMount(ctx context.Context) error {
	created := !r.mounted(KVMount)
	err := r.secretMount(ctx, KVMount, "kv", "application secrets and copies of bootstrap's tokens", 0, map[string]string{"version": "2"})
	if err != nil || !created || !r.plan.Apply {
		return err
	}
	// A new KV v2 engine refuses requests while it sets up its versioned
	// storage, briefly; later steps write to it.
	err = poll.Retry(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		_, err := r.c.Logical().ReadWithContext(ctx, KVMount+"/config")
		return err
	}, func(err error) bool { return !hasError(err, "non-versioned") })
	if err != nil {
		return fmt.Errorf("wait for the new %s engine: %w", KVMount, err)
	}
	return nil
}

// authMount makes sure an auth method of type typ is enabled at path.
func (r *reconciler) authMount(ctx context.Context, path, typ, desc string) error {
	a, ok := r.auths[path+"/"]
	if !ok {
		return r.change("create", "vault auth "+path, typ, func() error {
			err := r.c.Sys().EnableAuthWithOptionsWithContext(ctx, path, &api.EnableAuthOptions{Type: typ, Description: desc})
			if err != nil && !hasError(err, "path is already in use") {
				return err
			}
			// Re-read for the accessor the nomad-workloads policy needs.
			auths, err := r.c.Sys().ListAuthWithContext(ctx)
			if err != nil {
				return err
			}
			r.auths = auths
			return nil
		})
	}
	if a.Type != typ {
		return fmt.Errorf("vault auth method %s is of type %q, not %q: bootstrap will not replace it; disable or move it and run again", path, a.Type, typ)
	}
	return nil
}

func (r *reconciler) authMounts(ctx context.Context) error {
	if err := r.authMount(ctx, UserpassPath, "userpass", "the admin identity"); err != nil {
		return err
	}
	if err := r.authMount(ctx, AppRolePath, "approle", "application identities"); err != nil {
		return err
	}
	// Configured by the nomad stage once Nomad's JWKS URL exists.
	return r.authMount(ctx, JWTNomadPath, "jwt", "Nomad workload identities")
}

// seconds formats d the way Vault's duration fields accept it.
func seconds(d time.Duration) string { return fmt.Sprintf("%ds", int64(d/time.Second)) }

// fmtDuration prints d short: 24h, 1h30m, 87600h.
func fmtDuration(d time.Duration) string {
	s := d.String()
	for _, suffix := range []string{"m0s", "h0m"} {
		if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
			s = s[:len(s)-len(suffix)+1]
		}
	}
	if d == 0 {
		return "0"
	}
	return s
}
