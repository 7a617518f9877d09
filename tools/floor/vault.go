package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/parallel"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
	vaultstage "github.com/platform-bootstrap/bootstrap/stages/vault"
)

// vaultConfig is ansible/roles/vault/templates/vault.hcl.j2 for one node
// (the default: a single Vault node, so no retry_join peers).
func vaultConfig(n inventory.Node) string {
	return fmt.Sprintf(`ui            = true
disable_mlock = true
api_addr      = "https://%[1]s:8200"
cluster_addr  = "https://%[1]s:8201"

storage "raft" {
  path    = %[2]q
  node_id = %[3]q
  performance_multiplier = 1
}

listener "tcp" {
  address         = "%[1]s:8200"
  cluster_address = "%[1]s:8201"
  tls_cert_file   = %[4]q
  tls_key_file    = %[5]q
  tls_min_version = "tls12"
}

telemetry {
  prometheus_retention_time = "30s"
  disable_hostname          = true
}
`, n.PrivateIP, path(n, "data", "vault"), n.Name, path(n, "tls", "vault", "vault.pem"), path(n, "tls", "vault", "vault-key.pem"))
}

// vault does the vault stage's work: a bootstrap CA and the node's
// certificate, Vault started, initialised (5 shares, threshold 3, keys
// stored before anything else), unsealed, and the audit device enabled.
func (p *platform) vault(ctx context.Context) error {
	nodes := p.inv.WithRole(inventory.RoleVault)
	if len(nodes) != 1 {
		return fmt.Errorf("the floor runs one Vault node, not %d", len(nodes))
	}
	n := nodes[0]
	caPEM, certPEM, keyPEM, err := vaultTLS(p.e.Config.Name, n)
	if err != nil {
		return err
	}
	caFile := p.e.Path("tls", "vault", "ca.pem")
	for _, f := range []struct {
		name, content string
	}{
		{caFile, caPEM},
		{path(n, "tls", "vault", "ca.pem"), caPEM},
		{path(n, "tls", "vault", "vault.pem"), certPEM},
		{path(n, "tls", "vault", "vault-key.pem"), keyPEM},
		{path(n, "config", "vault.d", "vault.hcl"), vaultConfig(n)},
		{path(n, "data", "vault", ".keep"), ""},
		{path(n, "logs", "vault", ".keep"), ""},
	} {
		if err := writeFile(f.name, f.content, 0o600); err != nil {
			return err
		}
	}
	if err := p.ps.start(n.Local.Root, path(n, "logs", "vault.log"), p.bin+"/vault", "server", "-config="+path(n, "config", "vault.d", "vault.hcl")); err != nil {
		return err
	}
	p.vaultAddr = vaultstage.Addr(n)
	if err := p.e.State.SetOutput(stages.OutVaultAddr, p.vaultAddr); err != nil {
		return err
	}
	if err := p.e.State.SetOutput(stages.OutVaultCACert, caFile); err != nil {
		return err
	}
	c, err := pki.NewClient(p.vaultAddr, caFile)
	if err != nil {
		return err
	}
	if err := poll(ctx, 100*time.Millisecond, func() error {
		_, err := c.Sys().SealStatusWithContext(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("vault does not answer: %w", err)
	}
	cfg := p.e.Config.Vault
	resp, err := c.Sys().InitWithContext(ctx, &vaultapi.InitRequest{SecretShares: cfg.KeyShares, SecretThreshold: cfg.KeyThreshold})
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	init, err := json.MarshalIndent(vaultstage.InitData{KeysB64: resp.KeysB64, RootToken: resp.RootToken, Threshold: cfg.KeyThreshold, Node: n.Name, Time: time.Now().UTC()}, "", "  ")
	if err != nil {
		return err
	}
	if err := p.e.Secrets.Put(stages.SecretVaultInit, string(init)); err != nil {
		return err
	}
	if err := p.e.Secrets.Put(stages.SecretVaultRootToken, resp.RootToken); err != nil {
		return err
	}
	p.rootToken = resp.RootToken
	for _, k := range resp.KeysB64[:cfg.KeyThreshold] {
		if _, err := c.Sys().UnsealWithOptionsWithContext(ctx, &vaultapi.UnsealOpts{Key: k}); err != nil {
			return fmt.Errorf("unseal: %w", err)
		}
	}
	if err := poll(ctx, 100*time.Millisecond, func() error {
		h, err := c.Sys().HealthWithContext(ctx)
		if err == nil && (h.Sealed || h.Standby) {
			err = errors.New("not active yet")
		}
		return err
	}); err != nil {
		return fmt.Errorf("vault is not active: %w", err)
	}
	c.SetToken(p.rootToken)
	return c.Sys().EnableAuditWithOptionsWithContext(ctx, "file", &vaultapi.EnableAuditOptions{
		Type:        "file",
		Description: "bootstrap: every request, secrets HMAC'd",
		Options:     map[string]string{"file_path": "logs/vault/audit.log", "mode": "0600"},
	})
}

// vaultTLS makes the bootstrap CA and node n's certificate, as the vault
// stage does (ECDSA P-256, the names of stages/vault's certSANs).
func vaultTLS(name string, n inventory.Node) (caPEM, certPEM, keyPEM string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "bootstrap Vault CA (" + name + ")"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", "", err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: n.Name},
		DNSNames:    []string{n.Name, "localhost", apitls.VaultServerName, "active." + apitls.VaultServerName, "standby." + apitls.VaultServerName},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(n.PrivateIP)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return "", "", "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", "", err
	}
	enc := func(typ string, b []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})) }
	return enc("CERTIFICATE", caDER), enc("CERTIFICATE", der), enc("EC PRIVATE KEY", kb), nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// pki is the pki stage's work, done by the project's own PKI code (the
// same calls: CAs, roles, policies, consul-template tokens, the admin
// identity, the root token revoked).
func (p *platform) pki(ctx context.Context) error {
	spec, err := pki.FromConfig(p.e.Config, p.vaultAddr)
	if err != nil {
		return err
	}
	c, err := p.vaultClient(ctx)
	if err != nil {
		return err
	}
	_, err = pki.Apply(ctx, c, p.e, spec)
	return err
}

// vaultClient returns a Vault client with the admin token (the root token
// before the pki phase).
func (p *platform) vaultClient(ctx context.Context) (*vaultapi.Client, error) {
	c, err := pki.NewClient(p.vaultAddr, p.e.State.Output(stages.OutVaultCACert))
	if err != nil {
		return nil, err
	}
	tok, err := pki.Token(ctx, p.e, c)
	if err != nil {
		return nil, err
	}
	c.SetToken(tok)
	return c, nil
}

// certs issues every agent's Consul and Nomad certificate at once, with the
// node's own consul-template token and exactly the request its
// consul-template makes (ansible/roles/{consul,nomad}/tasks), and writes
// them where the agents read them. (bootstrap runs consul-template, which
// also renews them; the floor issues them once.)
func (p *platform) certs(ctx context.Context) error {
	cfg := p.e.Config
	// Nomad's vault block trusts the Vault CA from consul-template's
	// directory.
	ca, err := readFile(p.e.State.Output(stages.OutVaultCACert))
	if err != nil {
		return err
	}
	for _, n := range p.inv.Nodes {
		if err := writeFile(path(n, "config", "consul-template", "vault-ca.pem"), ca, 0o644); err != nil {
			return err
		}
	}
	var issues []func() error
	for _, n := range p.inv.Nodes {
		tok, ok, err := p.e.Secrets.Get(pki.ConsulTemplateTokenSecret(n.Name))
		if err != nil || !ok {
			return fmt.Errorf("no consul-template token for %s: %v", n.Name, err)
		}
		kind := "client"
		if n.Has(inventory.RoleServer) {
			kind = "server"
		}
		for _, product := range []struct{ name, role, cn string }{
			{"consul", "consul/inter-ca/issue/" + kind + "-" + cfg.Datacenter, kind + "." + cfg.Datacenter + "." + cfg.Consul.Domain},
			{"nomad", "nomad/inter-ca/issue/" + kind + "-" + cfg.Region, kind + "." + cfg.Region + ".nomad"},
		} {
			issues = append(issues, func() error {
				if err := p.issue(ctx, n, strings.TrimSpace(tok), product.name, product.role, product.cn); err != nil {
					return fmt.Errorf("%s certificate of %s: %w", product.name, n.Name, err)
				}
				return nil
			})
		}
	}
	return parallel.Do(issues...)
}

func (p *platform) issue(ctx context.Context, n inventory.Node, token, product, role, cn string) error {
	c, err := pki.NewClient(p.vaultAddr, p.e.State.Output(stages.OutVaultCACert))
	if err != nil {
		return err
	}
	c.SetToken(token)
	s, err := c.Logical().WriteWithContext(ctx, role, map[string]any{
		"common_name": cn, "ttl": p.e.Config.PKI.LeafTTL,
		"alt_names": "localhost", "ip_sans": "127.0.0.1," + n.PrivateIP,
	})
	if err != nil {
		return err
	}
	str := func(k string) string { v, _ := s.Data[k].(string); return v }
	var chain strings.Builder
	if list, ok := s.Data["ca_chain"].([]any); ok {
		for _, c := range list {
			fmt.Fprintf(&chain, "%s\n", c)
		}
	}
	dir := path(n, "tls", product)
	for _, f := range []struct {
		name, content string
		perm          os.FileMode
	}{
		{dir + "/ca.pem", chain.String(), 0o644},
		{dir + "/key.pem", str("private_key") + "\n", 0o600},
		{dir + "/cert.pem", str("certificate") + "\n" + str("issuing_ca") + "\n", 0o644},
	} {
		if err := writeFile(f.name, f.content, f.perm); err != nil {
			return err
		}
	}
	return nil
}
