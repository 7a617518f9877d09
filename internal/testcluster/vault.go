package testcluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"
)

// Vault is a dev-mode Vault server with TLS: in memory, initialized and
// unsealed, with a root token.
type Vault struct {
	Addr   string // https://127.X.Y.1:8200
	Token  string // root token
	CACert string // path of the PEM CA that signed the server certificate
	Client *vaultapi.Client
	Proc   *Proc
	Dir    string // this server's files; removed when the test ends
}

// StartVault starts `vault server -dev -dev-tls` on a fresh subnet and waits
// until sys/health reports it initialized, unsealed and active.
func StartVault(t testing.TB) *Vault {
	t.Helper()
	bin := Bin(t, "vault")
	sn := NewSubnet(t)
	root := tempRoot(t, "vault")
	ip := sn.IP(1)
	certDir := filepath.Join(root, "tls")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	token := randomHex(t, 16)
	args := []string{
		"server", "-dev", "-dev-tls",
		"-dev-tls-cert-dir=" + certDir,
		// The generated certificate names only localhost and 127.0.0.1.
		"-dev-tls-san=" + ip,
		// The name bootstrap's Vault clients verify (the vault stage's
		// certificates carry it).
		"-dev-tls-san=vault.service.consul",
		"-dev-listen-address=" + ip + ":8200",
		// Do not write ~/.vault-token.
		"-dev-no-store-token",
	}
	// The token goes through the environment, not argv, which any local
	// user can read.
	p := Start(t, "vault", bin, args, root, "VAULT_DEV_ROOT_TOKEN_ID="+token)
	p.Redact(token)
	v := &Vault{
		Addr:   "https://" + ip + ":8200",
		Token:  token,
		CACert: filepath.Join(certDir, "vault-ca.pem"),
		Proc:   p,
		Dir:    root,
	}

	mustWait(t, "vault: wait for sys/health", []*Proc{p}, func(ctx context.Context) error {
		if v.Client == nil {
			c, err := vaultClient(v.Addr, v.CACert, token)
			if err != nil {
				return err // the CA file is written shortly after start
			}
			v.Client = c
		}
		h, err := v.Client.Sys().HealthWithContext(ctx)
		if err != nil {
			return err
		}
		if !h.Initialized || h.Sealed || h.Standby {
			return fmt.Errorf("health: initialized=%v sealed=%v standby=%v", h.Initialized, h.Sealed, h.Standby)
		}
		return nil
	})
	return v
}

// vaultClient returns a client for addr trusting only the CA in caFile.
// The caller's VAULT_* environment is overridden where it matters.
func vaultClient(addr, caFile, token string) (*vaultapi.Client, error) {
	cfg := vaultapi.DefaultConfig()
	if cfg.Error != nil {
		return nil, cfg.Error
	}
	cfg.Address = addr
	if err := cfg.ConfigureTLS(&vaultapi.TLSConfig{CACert: caFile}); err != nil {
		return nil, err
	}
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(token)
	c.ClearNamespace()
	return c, nil
}
