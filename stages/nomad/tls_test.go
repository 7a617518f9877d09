package nomad

import (
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/apitls/apitlstest"
	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/stagestest"
)

// leader answers GET /v1/status/leader as a Nomad agent does.
var leader = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/status/leader" {
		http.NotFound(w, r)
		return
	}
	_, _ = io.WriteString(w, `"127.0.1.1:4647"`)
})

func testEnv(t *testing.T, hcl string) *stages.Env {
	t.Helper()
	dir := t.TempDir()
	return stagestest.Env(t, ".", dir, hcl, nil)
}

func TestTLSNames(t *testing.T) {
	e := testEnv(t, "region = \"eu-west\"\nprovider \"local\" {}\n")
	server := inventory.Node{Name: "server-1", Roles: []string{"server", "vault"}}
	client := inventory.Node{Name: "client-1", Roles: []string{"client"}}
	if got := e.NomadServerName(); got != "server.eu-west.nomad" {
		t.Errorf("ServerName = %q", got)
	}
	if got := e.NomadTLSName(server); got != "server.eu-west.nomad" {
		t.Errorf("TLSName(server) = %q", got)
	}
	if got := e.NomadTLSName(client); got != "client.eu-west.nomad" {
		t.Errorf("TLSName(client) = %q", got)
	}
	if got := testEnv(t, `provider "local" {}`).NomadServerName(); got != "server.global.nomad" {
		t.Errorf("default region: ServerName = %q", got)
	}
}

// A client node can hold a certificate for a server's address (the PKI
// allows any IP address); it must not pass for the server. Both test
// servers listen on 127.0.0.1, like a client node that took over a
// server's address.
func TestClientVerifiesServerName(t *testing.T) {
	ca := apitlstest.NewCA(t, "Nomad global Intermediate CA")
	server := "https://" + apitlstest.Serve(t, ca.Issue(t, []string{"server.global.nomad", "localhost"}, "127.0.0.1"), leader)
	impostor := "https://" + apitlstest.Serve(t, ca.Issue(t, []string{"client.global.nomad", "localhost"}, "127.0.0.1"), leader)

	leaderOf := func(addr, name string) error {
		t.Helper()
		c, err := NewClientFor(addr, ca.File, name, "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Status().Leader()
		return err
	}
	if err := leaderOf(server, "server.global.nomad"); err != nil {
		t.Errorf("the server: %v", err)
	}
	if err := leaderOf(server, "server.eu-west.nomad"); err == nil {
		t.Error("a server of another region's name was accepted")
	}
	if err := leaderOf(impostor, "server.global.nomad"); err == nil {
		t.Error("a client node's certificate passed for the server")
	}
	// A client agent is asked for with its own name.
	if err := leaderOf(impostor, "client.global.nomad"); err != nil {
		t.Errorf("the client agent: %v", err)
	}

	// NewClient, for callers that know only the address of a server.
	c, err := NewClient(server, ca.File, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status().Leader(); err != nil {
		t.Errorf("NewClient, the server: %v", err)
	}
	c, err = NewClient(impostor, ca.File, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status().Leader(); !errors.Is(err, apitls.ErrNotServer) {
		t.Errorf("NewClient, a client node's certificate: want ErrNotServer, got %v", err)
	}

	if _, err := NewClientFor(server, ca.File, "", ""); err == nil {
		t.Error("NewClientFor without a name was accepted")
	}
	if _, err := NewClient(server, filepath.Join(t.TempDir(), "missing.pem"), ""); err == nil {
		t.Error("a missing CA file was accepted")
	}
}

func TestServerClient(t *testing.T) {
	e := testEnv(t, `provider "local" {}`)
	if _, err := cluster.NomadServer(e, ""); !errors.Is(err, stages.ErrNotReady) {
		t.Fatalf("before the stage ran: %v", err)
	}
}
