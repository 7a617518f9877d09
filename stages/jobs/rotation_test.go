package jobs

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/apitls/apitlstest"
)

func TestRootCA(t *testing.T) {
	ca := apitlstest.NewCA(t, "root")
	rootPEM, err := os.ReadFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	leaf := ca.Issue(t, []string{"server.dc1.consul"})
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]})
	dir := t.TempDir()
	chain := filepath.Join(dir, "chain.pem")
	os.WriteFile(chain, append(append([]byte{}, rootPEM...), leafPEM...), 0o600)
	got, err := rootCA(chain)
	if err != nil || got != string(rootPEM) {
		t.Errorf("rootCA of a root and a certificate it signed = %q, %v; want the root alone", got, err)
	}
	only := filepath.Join(dir, "leaf.pem")
	os.WriteFile(only, leafPEM, 0o600)
	if _, err := rootCA(only); err == nil || !strings.Contains(err.Error(), "no root CA") {
		t.Errorf("rootCA of a certificate that is no root: %v", err)
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
