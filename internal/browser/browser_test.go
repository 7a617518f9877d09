package browser

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func startBrowser(t *testing.T, caFiles ...string) *Browser {
	t.Helper()
	if testing.Short() {
		t.Skip("starts chromium")
	}
	if _, err := ExecPath(); err != nil {
		if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	b, err := Start(context.Background(), caFiles...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	b.Dir = t.TempDir()
	return b
}

// certFile writes the server's certificate as a PEM file.
func certFile(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca.pem")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

const loginPage = `<!doctype html><title>t</title>
<div id="app">loading</div>
<script>
setTimeout(() => {
  document.getElementById("app").innerHTML =
    '<form><input name="secret" type="password"><button type="button" id="go">Sign in</button></form>';
  document.getElementById("go").onclick = () => {
    const v = document.querySelector("input").value;
    document.getElementById("app").innerText = v === "s3cret" ? "Signed in as ui-read" : "Denied";
  };
}, 300);
</script>`

func TestSignInOnAPageThatRendersLate(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(loginPage))
	}))
	defer srv.Close()
	b := startBrowser(t, certFile(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := b.NewPage()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Open(ctx, srv.URL); err != nil {
		t.Fatal(err)
	}
	if err := p.Type(ctx, `input[name="secret"]`, "s3cret"); err != nil {
		t.Fatal(err)
	}
	if err := p.ClickText(ctx, "Sign in"); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitText(ctx, 10*time.Second, "Signed in", "ui-read"); err != nil {
		t.Fatal(err)
	}
	// A text that never shows is an error that says what the page showed.
	err = p.WaitText(ctx, time.Second, "Dashboards")
	if err == nil || !strings.Contains(err.Error(), "Signed in as ui-read") {
		t.Errorf("waiting for a missing text: %v", err)
	}
	png, err := p.Screenshot(ctx, "signed-in")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(png), "\x89PNG") {
		t.Error("the screenshot is not a PNG")
	}
	if _, err := os.Stat(filepath.Join(b.Dir, "signed-in.png")); err != nil {
		t.Error(err)
	}
}

// The browser trusts the CAs it is given, not any certificate: a server
// whose certificate chains to another CA is refused.
func TestUntrustedCertificateIsRefused(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<p>secret page</p>"))
	}))
	defer srv.Close()
	b := startBrowser(t, unrelatedCA(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := b.NewPage()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	err = p.Open(ctx, srv.URL)
	if text := p.Text(ctx); err == nil || strings.Contains(text, "secret page") {
		t.Fatalf("a server with an untrusted certificate was opened: %v, page %q", err, text)
	}
}

// unrelatedCA writes a CA certificate that signed nothing.
func unrelatedCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "unrelated CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
