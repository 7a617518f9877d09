package consul

import (
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/apitls/apitlstest"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/stagestest"
)

// leader answers GET /v1/status/leader as a Consul agent does.
var leader = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/status/leader" {
		http.NotFound(w, r)
		return
	}
	_, _ = io.WriteString(w, `"127.0.1.1:8300"`)
})

func testEnv(t *testing.T, hcl string) *stages.Env {
	t.Helper()
	dir := t.TempDir()
	return stagestest.Env(t, ".", dir, hcl, nil)
}

func TestTLSNames(t *testing.T) {
	e := testEnv(t, "datacenter = \"ams3\"\nprovider \"local\" {}\nconsul {\n  domain = \"corp.example\"\n}\n")
	server := inventory.Node{Name: "server-1", Roles: []string{"server", "vault"}}
	client := inventory.Node{Name: "client-1", Roles: []string{"client"}}
	if got := e.ConsulServerName(); got != "server.ams3.corp.example" {
		t.Errorf("ServerName = %q", got)
	}
	if got := e.ConsulTLSName(server); got != "server.ams3.corp.example" {
		t.Errorf("TLSName(server) = %q", got)
	}
	if got := e.ConsulTLSName(client); got != "client.ams3.corp.example" {
		t.Errorf("TLSName(client) = %q", got)
	}
	if got := testEnv(t, `provider "local" {}`).ConsulServerName(); got != "server.dc1.consul" {
		t.Errorf("defaults: ServerName = %q", got)
	}
}

// The names the clients verify are the names the pki stage's roles issue,
// and the consul role asks for.
func TestTLSNamesMatchPKI(t *testing.T) {
	e := testEnv(t, `provider "local" {}`)
	spec, err := pki.FromConfig(e.Config, "https://127.0.0.1:8200")
	if err != nil {
		t.Fatal(err)
	}
	domains := map[string][]string{}
	for _, ca := range spec.AllCAs() {
		if ca.Name != "consul" {
			continue
		}
		for _, r := range ca.Roles {
			domains[r.Name] = r.AllowedDomains
		}
	}
	server := inventory.Node{Roles: []string{"server"}}
	client := inventory.Node{Roles: []string{"client"}}
	for role, n := range map[string]inventory.Node{pki.ConsulRole("server", "dc1"): server, pki.ConsulRole("client", "dc1"): client} {
		if !strings.Contains(strings.Join(domains[role], " "), e.ConsulTLSName(n)) {
			t.Errorf("role %s issues %q, not %s", role, domains[role], e.ConsulTLSName(n))
		}
	}
	for _, d := range domains[pki.ConsulRole("client", "dc1")] {
		if apitls.IsServerName(d) {
			t.Errorf("the client role issues the server name %s", d)
		}
	}
}

// A client node can hold a certificate for a server's address (the PKI
// allows any IP address); it must not pass for the server. Both test
// servers listen on 127.0.0.1, like a client node that took over a
// server's address.
func TestClientVerifiesServerName(t *testing.T) {
	ca := apitlstest.NewCA(t, "Consul dc1 Intermediate CA")
	server := apitlstest.Serve(t, ca.Issue(t, []string{"server.dc1.consul", "localhost"}, "127.0.0.1"), leader)
	impostor := apitlstest.Serve(t, ca.Issue(t, []string{"client.dc1.consul", "localhost"}, "127.0.0.1"), leader)

	leaderOf := func(addr, name string) error {
		t.Helper()
		c, err := NewClientFor(addr, ca.File, name, "")
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Status().Leader()
		return err
	}
	if err := leaderOf(server, "server.dc1.consul"); err != nil {
		t.Errorf("the server: %v", err)
	}
	if err := leaderOf(server, "server.dc2.consul"); err == nil {
		t.Error("another datacenter's server name was accepted")
	}
	if err := leaderOf(impostor, "server.dc1.consul"); err == nil {
		t.Error("a client node's certificate passed for the server")
	}
	if err := leaderOf(impostor, "client.dc1.consul"); err != nil {
		t.Errorf("the client agent, by its name: %v", err)
	}

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
}

func TestTemplateTokens(t *testing.T) {
	e := testEnv(t, `provider "local" {}`)
	inv := &inventory.Inventory{Nodes: []inventory.Node{
		{Name: "server-1", Roles: []string{"server", "vault"}},
		{Name: "client-1", Roles: []string{"client"}},
		{Name: "vault-1", Roles: []string{"vault"}}, // runs no consul-template
	}}
	if err := e.Secrets.Put(pki.ConsulTemplateTokenSecret("server-1"), "hvs.server\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.TemplateTokens(e, inv); !errors.Is(err, stages.ErrNotReady) || !strings.Contains(err.Error(), "client-1") {
		t.Fatalf("a node without its token: %v", err)
	}
	if err := e.Secrets.Put(pki.ConsulTemplateTokenSecret("client-1"), "hvs.client"); err != nil {
		t.Fatal(err)
	}
	got, err := pki.TemplateTokens(e, inv)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["server-1"] != "hvs.server" || got["client-1"] != "hvs.client" {
		t.Errorf("tokens: %v", got)
	}
}

// consul-template verifies the name every Vault certificate carries; the
// role's default must be that name.
func TestConsulTemplateVerifiesVaultName(t *testing.T) {
	b, err := os.ReadFile("../../ansible/roles/consul_template/defaults/main.yml")
	if err != nil {
		t.Fatal(err)
	}
	if want := `ct_vault_server_name: "` + apitls.VaultServerName + `"`; !strings.Contains(string(b), want) {
		t.Errorf("the consul_template role's defaults lack %s", want)
	}
	b, err = os.ReadFile("../../ansible/roles/consul_template/templates/config.hcl.j2")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"server_name = {{ ct_vault_server_name | to_json }}", "token       = {{ ct_node_token | to_json }}"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config.hcl.j2 lacks %q", want)
		}
	}
}
