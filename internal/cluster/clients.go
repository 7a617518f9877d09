package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// ConsulClient returns an HTTPS Consul client for addr (host:port) that
// trusts caFile and accepts only a certificate valid for serverName, or,
// when serverName is empty, any Consul server's (see TLS). It does not read
// CONSUL_* variables: bootstrap talks to its own cluster only.
func ConsulClient(addr, caFile, serverName, token string) (*consulapi.Client, error) {
	tc, err := TLS(caFile, serverName)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", addr, err)
	}
	tr := &http.Transport{
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 5 * time.Second,
		DisableKeepAlives:   true,
	}
	// The api package's own TLSConfig is not used: with HttpClient set it
	// is ignored, and it cannot require a server's name.
	c, err := consulapi.NewClient(&consulapi.Config{
		Address:    addr,
		Scheme:     "https",
		Token:      token,
		HttpClient: &http.Client{Transport: tr, Timeout: 15 * time.Second},
	})
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", addr, err)
	}
	return c, nil
}

// ConsulAgent returns a Consul client for node n's agent, verifying the
// name of its role.
func ConsulAgent(e *stages.Env, n inventory.Node, token string) (*consulapi.Client, error) {
	return ConsulClient(stages.ConsulAddr(n), e.CAFile("consul"), e.ConsulTLSName(n), token)
}

// NomadClient returns a Nomad API client for addr that trusts caFile,
// accepts only a certificate valid for serverName, or, when serverName is
// empty, any Nomad server's (see TLS), and carries exactly token (NOMAD_*
// variables of the environment are ignored).
func NomadClient(addr, caFile, serverName, token string) (*nomadapi.Client, error) {
	return nomadClient(addr, caFile, serverName, token, 0)
}

// nomadClient is NomadClient whose requests wait up to dialWait for a
// server that refuses connections (see retryForwarded).
func nomadClient(addr, caFile, serverName, token string, dialWait time.Duration) (*nomadapi.Client, error) {
	tc, err := TLS(caFile, serverName)
	if err != nil {
		return nil, fmt.Errorf("nomad client for %s: %w", addr, err)
	}
	// The HTTP client is built here because the api package's TLSConfig
	// cannot require a server's name; with HttpClient set it is ignored.
	// A transport with its own TLS configuration speaks HTTP/1, as the api
	// package's own client does: its exec websockets need it.
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		// No overall timeout (blocking queries, log streams), but a server
		// that stops answering (frozen, or its host gone without a reset)
		// on a kept-alive connection must not hang a run: every request
		// bootstrap sends is answered in seconds, blocking ones included
		// (WaitTime below).
		ResponseHeaderTimeout: 2 * time.Minute,
	}
	c, err := nomadapi.NewClient(&nomadapi.Config{
		Address:    addr,
		SecretID:   token,
		HttpClient: &http.Client{Transport: retryForwarded{next: tr, dialWait: dialWait}},
		WaitTime:   5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("nomad client: %w", err)
	}
	c.SetSecretID(token)
	c.SetNamespace("")
	c.SetRegion("")
	return c, nil
}

// retryForwarded asks again for a read that a Nomad server forwarded to its
// leader over a connection that broke ("rpc error: EOF", seen right after a
// server restarted): the next try works. Writes are never repeated, except
// a request that never left: one whose connection a server refused or
// reset while it restarted (after a reboot, or its certificate's renewal)
// is sent again for up to dialWait. Zero, for clients that ask whether an
// agent answers at all, fails at once: a stopped agent must not cost each
// such question the wait.
type retryForwarded struct {
	next     http.RoundTripper
	dialWait time.Duration
}

// serverDialWait bounds how long a request to the platform's server
// address waits for a restarting server.
const serverDialWait = 20 * time.Second

func (t retryForwarded) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	try := req
	for attempt := 1; ; attempt++ {
		resp, err := t.next.RoundTrip(try)
		if err != nil {
			var op *net.OpError
			if !errors.As(err, &op) || op.Op != "dial" || time.Since(start) >= t.dialWait {
				return nil, err
			}
			next, ok := again(req)
			if !ok {
				return nil, err
			}
			try = next
		} else if req.Method != http.MethodGet || resp.StatusCode != http.StatusInternalServerError || attempt == 10 {
			return resp, nil
		} else {
			body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if err != nil {
				return nil, err
			}
			if !bytes.Contains(body, []byte("rpc error")) || !bytes.Contains(body, []byte("EOF")) {
				resp.Body = io.NopCloser(bytes.NewReader(body))
				return resp, nil
			}
		}
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(time.Duration(min(attempt, 5)) * 300 * time.Millisecond):
		}
	}
}

// again returns a copy of req to send once more, with its body from the
// start, if its body can be read again.
func again(req *http.Request) (*http.Request, bool) {
	r := req.Clone(req.Context())
	if req.Body == nil || req.Body == http.NoBody {
		return r, true
	}
	if req.GetBody == nil {
		return nil, false
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, false
	}
	r.Body = body
	return r, true
}

// NomadAgent returns a Nomad client for node n's agent, verifying the name
// of its role.
func NomadAgent(e *stages.Env, n inventory.Node, token string) (*nomadapi.Client, error) {
	return NomadClient(stages.NomadAddr(n), e.CAFile("nomad"), e.NomadTLSName(n), token)
}

// NomadServer returns a Nomad client for the server address the nomad
// stage recorded (OutNomadAddr), verifying the servers' name.
func NomadServer(e *stages.Env, token string) (*nomadapi.Client, error) {
	addr := e.State.Output(stages.OutNomadAddr)
	if addr == "" {
		return nil, stages.NotReadyf("nomad is not up yet")
	}
	// Stages use the platform's API through it, not ask whether it is up:
	// a server restarting (rebooted, re-certified) is waited for.
	return nomadClient(addr, e.CAFile("nomad"), e.NomadServerName(), token, serverDialWait)
}
