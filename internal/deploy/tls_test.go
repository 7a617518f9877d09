package deploy

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/apitls/apitlstest"
)

// The deploy token goes to whatever answers NOMAD_ADDR. A client node can
// hold a certificate for a server's address (the platform's PKI allows any
// IP address), so the certificate must name a server: exactly
// NOMAD_TLS_SERVER_NAME when set, some server.<region>.nomad when the
// address is an IP address. Both test servers listen on 127.0.0.1.
func TestClientVerifiesServer(t *testing.T) {
	ca := apitlstest.NewCA(t, "Nomad global Intermediate CA")
	var gotToken []string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotToken = append(gotToken, r.Header.Get("X-Nomad-Token"))
		_, _ = io.WriteString(w, `"127.0.1.1:4647"`)
	})
	server := apitlstest.Serve(t, ca.Issue(t, []string{"server.global.nomad", "localhost"}, "127.0.0.1"), h)
	impostor := apitlstest.Serve(t, ca.Issue(t, []string{"client.global.nomad", "localhost"}, "127.0.0.1"), h)

	leader := func(env ...string) error {
		t.Helper()
		c, err := Client(append(env, "NOMAD_CACERT="+ca.File, "NOMAD_TOKEN=secret-deploy-token"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Status().Leader()
		return err
	}
	for _, tc := range []struct {
		name string
		env  []string
		ok   bool
		is   error
	}{
		{"server by name", []string{"NOMAD_ADDR=https://" + server, "NOMAD_TLS_SERVER_NAME=server.global.nomad"}, true, nil},
		{"server by address", []string{"NOMAD_ADDR=https://" + server}, true, nil},
		{"client node by name", []string{"NOMAD_ADDR=https://" + impostor, "NOMAD_TLS_SERVER_NAME=server.global.nomad"}, false, nil},
		{"client node by address", []string{"NOMAD_ADDR=https://" + impostor}, false, apitls.ErrNotServer},
		{"another region's server", []string{"NOMAD_ADDR=https://" + server, "NOMAD_TLS_SERVER_NAME=server.eu-west.nomad"}, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotToken = nil
			err := leader(tc.env...)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && err == nil:
				t.Fatal("accepted")
			case tc.is != nil && !errors.Is(err, tc.is):
				t.Fatalf("want %v, got %v", tc.is, err)
			}
			if !tc.ok && len(gotToken) > 0 {
				t.Fatalf("the token reached the impostor")
			}
		})
	}

	// A host name verifies as usual: it is the identity (a proxy's, say).
	c, err := Client([]string{"NOMAD_ADDR=https://" + strings.Replace(server, "127.0.0.1", "localhost", 1), "NOMAD_CACERT=" + ca.File})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status().Leader(); err != nil {
		t.Errorf("by host name: %v", err)
	}
}
