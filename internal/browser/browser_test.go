package browser

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/apitls/apitlstest"
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

// withChain issues a server certificate that, like the platform's agents,
// sends its issuing CA along.
func withChain(t *testing.T, ca *apitlstest.CA) tls.Certificate {
	cert := ca.Issue(t, []string{"localhost"}, "127.0.0.1")
	cert.Certificate = append(cert.Certificate, ca.Cert.Raw)
	return cert
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
	ca := apitlstest.NewCA(t, "platform CA")
	addr := apitlstest.Serve(t, withChain(t, ca), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(loginPage))
	}))
	b := startBrowser(t, ca.File)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := b.NewPage()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Open(ctx, "https://"+addr); err != nil {
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
	// A fetch from the page, awaited, as the Grafana tour lists dashboards.
	var page string
	if err := p.Eval(ctx, `fetch("/").then(r => r.text())`, &page); err != nil || !strings.Contains(page, "loading") {
		t.Errorf("a fetch from the page: %v, %.40q", err, page)
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
	ca := apitlstest.NewCA(t, "platform CA")
	addr := apitlstest.Serve(t, withChain(t, ca), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("<p>secret page</p>"))
	}))
	b := startBrowser(t, apitlstest.NewCA(t, "another CA").File)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := b.NewPage()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	err = p.Open(ctx, "https://"+addr)
	if text := p.Text(ctx); err == nil || strings.Contains(text, "secret page") {
		t.Fatalf("a server with an untrusted certificate was opened: %v, page %q", err, text)
	}
}
