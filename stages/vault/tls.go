package vault

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Vault's own listener cannot use the Vault PKI (it does not exist yet), so
// the stage makes a small bootstrap CA and one certificate per Vault node.
// The CA key stays in the secret store; clients trust the CA file.
const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	certLifetime = 365 * 24 * time.Hour
	// renewBefore re-issues a node certificate this long before it expires.
	renewBefore = 30 * 24 * time.Hour
)

func caCertPath(e *stages.Env) string            { return e.Path("tls", "vault", "ca.pem") }
func certPath(e *stages.Env, node string) string { return e.Path("tls", "vault", node+".pem") }

const caKeySecret = "tls/vault-ca-key.pem"

func keySecret(node string) string { return "tls/vault/" + node + "-key.pem" }

// certSANs are the names a Vault node's certificate must carry. Every one
// carries apitls.VaultServerName, the name API clients verify.
func certSANs(n inventory.Node) (dns []string, ips []net.IP) {
	dns = []string{n.Name, "localhost", apitls.VaultServerName, "active." + apitls.VaultServerName, "standby." + apitls.VaultServerName}
	ips = []net.IP{net.ParseIP("127.0.0.1")}
	for _, a := range []string{n.PrivateIP, n.PublicIP} {
		if ip := net.ParseIP(a); ip != nil && !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	return dns, ips
}

// certificates makes the CA and the node certificates that are missing,
// expiring, or lack a name.
func certificates(e *stages.Env, p *reconcile.Plan, nodes []inventory.Node) error {
	ca, caKey, err := loadCA(e)
	if err != nil {
		return err
	}
	if ca == nil {
		err := p.Do(reconcile.Create, "vault bootstrap CA", caCertPath(e), func() (err error) {
			ca, caKey, err = newCA(e)
			return err
		})
		if err != nil {
			return err
		}
	}
	for _, n := range nodes {
		if reason := certNeeds(e, ca, n); reason != "" {
			if err := p.Do(reconcile.Create, "vault TLS certificate for "+n.Name, reason, func() error { return issueCert(e, ca, caKey, n) }); err != nil {
				return err
			}
		}
	}
	return nil
}

func loadCA(e *stages.Env) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(caCertPath(e))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	keyPEM, ok, err := e.Secrets.Get(caKeySecret)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return nil, nil, nil
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", caCertPath(e), err)
	}
	key, err := parseKey([]byte(keyPEM))
	if err != nil {
		return nil, nil, fmt.Errorf("vault CA key: %w", err)
	}
	return cert, key, nil
}

// certNeeds says why a node certificate must be (re)issued, or "".
func certNeeds(e *stages.Env, ca *x509.Certificate, n inventory.Node) string {
	b, err := os.ReadFile(certPath(e, n.Name))
	if err != nil {
		return "missing"
	}
	if _, ok, _ := e.Secrets.Get(keySecret(n.Name)); !ok {
		return "key missing"
	}
	c, err := parseCert(b)
	if err != nil {
		return "unreadable"
	}
	if ca == nil || c.CheckSignatureFrom(ca) != nil {
		return "not signed by the current CA"
	}
	if time.Until(c.NotAfter) < renewBefore {
		return "expires " + c.NotAfter.Format(time.DateOnly)
	}
	dns, ips := certSANs(n)
	for _, d := range dns {
		if !slices.Contains(c.DNSNames, d) {
			return "lacks name " + d
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return "lacks address " + ip.String()
		}
	}
	return ""
}

// newCA makes the bootstrap CA. Its key is stored before its certificate,
// so a run killed between the two makes a new CA nobody trusts yet rather
// than losing the key of one in use.
func newCA(e *stages.Env) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if err := os.MkdirAll(filepath.Dir(caCertPath(e)), 0o700); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if err := e.Secrets.Put(caKeySecret, string(encodeKey(key))); err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "bootstrap Vault CA (" + e.Config.Name + ")"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := fsutil.WriteFile(caCertPath(e), pemCert(der), 0o644); err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	return ca, key, err
}

// issueCert issues node n its certificate, its key stored first.
func issueCert(e *stages.Env, ca *x509.Certificate, caKey *ecdsa.PrivateKey, n inventory.Node) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	dns, ips := certSANs(n)
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: n.Name},
		DNSNames:     dns,
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := e.Secrets.Put(keySecret(n.Name), string(encodeKey(key))); err != nil {
		return err
	}
	return fsutil.WriteFile(certPath(e, n.Name), pemCert(der), 0o644)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(k *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalECPrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func parseCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

func parseKey(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM key")
	}
	return x509.ParseECPrivateKey(blk.Bytes)
}
