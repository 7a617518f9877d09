package jobs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCert returns a PEM certificate named cn, signed by parent (self-signed
// when nil), and its key.
func testCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestRootCA(t *testing.T) {
	root, rootKey, rootPEM := testCert(t, "root", nil, nil)
	_, _, interPEM := testCert(t, "intermediate", root, rootKey)
	dir := t.TempDir()
	chain := filepath.Join(dir, "chain.pem")
	os.WriteFile(chain, append(append([]byte{}, rootPEM...), interPEM...), 0o600)
	got, err := rootCA(chain)
	if err != nil || got != string(rootPEM) {
		t.Errorf("rootCA of root + intermediate = %q, %v; want the root alone", got, err)
	}
	only := filepath.Join(dir, "inter.pem")
	os.WriteFile(only, interPEM, 0o600)
	if _, err := rootCA(only); err == nil || !strings.Contains(err.Error(), "no root CA") {
		t.Errorf("rootCA of an intermediate alone: %v", err)
	}
}

func TestSecretsDigest(t *testing.T) {
	p := &platform{kv: map[string]map[string]string{
		"general/prometheus/tokens": {"consul": "a", "nomad": "b"},
		"general/fabio/consul":      {"token": "c"},
	}}
	prom, fabio := secretsDigest(p, "prometheus"), secretsDigest(p, "fabio")
	if prom == "" || fabio == "" || prom == fabio {
		t.Fatalf("digests %q and %q", prom, fabio)
	}
	if secretsDigest(p, "node-exporter") != "" {
		t.Error("a job without secrets has a digest")
	}
	p.kv["general/prometheus/tokens"]["nomad"] = "b2"
	if secretsDigest(p, "prometheus") == prom {
		t.Error("a new token does not change prometheus's digest")
	}
	if secretsDigest(p, "fabio") != fabio {
		t.Error("prometheus's new token changes fabio's digest")
	}
	if len(prom) != 16 {
		t.Errorf("digest %q is not 16 hex digits", prom)
	}
}
