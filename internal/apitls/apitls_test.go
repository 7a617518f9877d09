package apitls_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/apitls/apitlstest"
)

func TestNames(t *testing.T) {
	for got, want := range map[string]string{
		apitls.NomadServerName("global"):               "server.global.nomad",
		apitls.NomadServerName(""):                     "server.global.nomad",
		apitls.NomadClientName("eu-west"):              "client.eu-west.nomad",
		apitls.ConsulServerName("dc1", "consul"):       "server.dc1.consul",
		apitls.ConsulServerName("dc2", ""):             "server.dc2.consul",
		apitls.ConsulClientName("dc1", "corp.example"): "client.dc1.corp.example",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestIsServerName(t *testing.T) {
	for name, want := range map[string]bool{
		"server.global.nomad":      true,
		"server.dc1.consul":        true,
		"server.dc1.corp.example":  true,
		"client.global.nomad":      false,
		"localhost":                false,
		"server.nomad":             false,
		"server..nomad":            false,
		"server.*.nomad":           false,
		"evil.server.global.nomad": false,
		"vault.service.consul":     false,
	} {
		if got := apitls.IsServerName(name); got != want {
			t.Errorf("IsServerName(%q) = %t", name, got)
		}
	}
}

// get fetches https://addr/ with tc and returns the error, if any.
func get(tc *tls.Config, addr string) error {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
	resp, err := c.Get("https://" + addr + "/")
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })

// The servers and client nodes of a platform carry certificates from the
// same CA with their IP addresses; only the name tells a server from a
// client node. A client node can get a certificate for a server's address,
// which the servers below stand for: both listen on 127.0.0.1.
func TestConfig(t *testing.T) {
	ca := apitlstest.NewCA(t, "Nomad global Intermediate CA")
	server := apitlstest.Serve(t, ca.Issue(t, []string{"server.global.nomad", "localhost"}, "127.0.0.1"), ok)
	client := apitlstest.Serve(t, ca.Issue(t, []string{"client.global.nomad", "localhost"}, "127.0.0.1"), ok)
	other := apitlstest.NewCA(t, "someone else's CA")
	impostor := apitlstest.Serve(t, other.Issue(t, []string{"server.global.nomad"}, "127.0.0.1"), ok)

	config := func(caFile, name string) *tls.Config {
		t.Helper()
		tc, err := apitls.Config(caFile, name)
		if err != nil {
			t.Fatal(err)
		}
		return tc
	}
	requireServer := func(caFile string) *tls.Config {
		tc := config(caFile, "")
		apitls.RequireServer(tc)
		return tc
	}
	var hostErr x509.HostnameError
	var unknown x509.UnknownAuthorityError

	if err := get(config(ca.File, "server.global.nomad"), server); err != nil {
		t.Errorf("the server, by its name: %v", err)
	}
	if err := get(config(ca.File, "server.global.nomad"), client); !errors.As(err, &hostErr) {
		t.Errorf("a client node's certificate at the server's address: want a name mismatch, got %v", err)
	}
	if err := get(config(ca.File, "server.eu-west.nomad"), server); !errors.As(err, &hostErr) {
		t.Errorf("the server of another region's name: want a name mismatch, got %v", err)
	}
	if err := get(config(ca.File, "server.global.nomad"), impostor); !errors.As(err, &unknown) {
		t.Errorf("the right name from another CA: want unknown authority, got %v", err)
	}

	// By address only, the client node passes: why clients check names.
	if err := get(config(ca.File, ""), client); err != nil {
		t.Fatalf("by address: %v", err)
	}
	if err := get(requireServer(ca.File), server); err != nil {
		t.Errorf("any server, the server: %v", err)
	}
	if err := get(requireServer(ca.File), client); !errors.Is(err, apitls.ErrNotServer) {
		t.Errorf("any server, a client node: want ErrNotServer, got %v", err)
	}
	if err := get(requireServer(ca.File), impostor); !errors.As(err, &unknown) {
		t.Errorf("any server, another CA: want unknown authority, got %v", err)
	}
}

func TestConfigBadCA(t *testing.T) {
	if _, err := apitls.Config(t.TempDir()+"/missing.pem", "x"); err == nil {
		t.Error("a missing CA file was accepted")
	}
}
