// Package apitls names the identities in the certificates of Nomad, Consul
// and Vault servers and builds the TLS configurations API clients verify
// them with.
//
// Every agent certificate the Vault PKI issues carries the agent's IP
// addresses, and the issuing roles accept any IP address: an IP address in
// a certificate proves only that the CA issued it to some node, and a
// client node can get a certificate for a server's address. What a client
// node cannot get is a server's name: the client roles issue only
// client.<region>.nomad and client.<datacenter>.<domain> (pki.Spec.AllCAs).
// So API clients verify the name of the role they expect, whatever address
// they dial.
package apitls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// VaultServerName is the name every Vault node's certificate carries (the
// vault stage's bootstrap CA issues them), and the name Vault API clients
// verify.
const VaultServerName = "vault.service.consul"

// Defaults of the configuration, for callers that pass an unset value.
const (
	defaultRegion = "global"
	defaultDomain = "consul"
)

// NomadServerName is the name of Nomad servers' certificates in region
// ("" is "global"), the name Nomad itself uses: server.<region>.nomad.
func NomadServerName(region string) string { return "server." + or(region, defaultRegion) + ".nomad" }

// NomadClientName is the name of Nomad client agents' certificates.
func NomadClientName(region string) string { return "client." + or(region, defaultRegion) + ".nomad" }

// ConsulServerName is the name of Consul servers' certificates in a
// datacenter under a DNS domain ("" is "consul"): server.<dc>.<domain>.
func ConsulServerName(datacenter, domain string) string {
	return "server." + datacenter + "." + or(domain, defaultDomain)
}

// ConsulClientName is the name of Consul client agents' certificates.
func ConsulClientName(datacenter, domain string) string {
	return "client." + datacenter + "." + or(domain, defaultDomain)
}

// NomadRegion is region, or Nomad's default region when it is empty.
func NomadRegion(region string) string { return or(region, defaultRegion) }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Config returns a client TLS configuration that trusts only the
// certificates in caFile and accepts a peer only when its certificate is
// valid for serverName, whatever address is dialled. An empty serverName
// verifies the dialled host, which for an IP address says nothing about
// the peer's role; use RequireServer then.
func Config(caFile, serverName string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}, nil
}

// ErrNotServer means a peer's certificate is valid but was not issued to a
// server: it names no server.
var ErrNotServer = errors.New("the certificate was not issued to a server")

// RequireServer makes c, which verifies the dialled host, also require a
// server's name in the peer's certificate: a DNS name "server.<...>" such
// as server.global.nomad or server.dc1.consul. It is for callers that know
// they talk to a server but not the exact name (the region); the chain is
// still verified against c's roots, which must be a platform CA whose
// client roles cannot issue such a name.
func RequireServer(c *tls.Config) {
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return ErrNotServer
		}
		leaf := cs.PeerCertificates[0]
		for _, name := range leaf.DNSNames {
			if IsServerName(name) {
				return nil
			}
		}
		return fmt.Errorf("%w (it names %s)", ErrNotServer, strings.Join(append(leaf.DNSNames, ipStrings(leaf)...), ", "))
	}
}

// IsServerName reports whether name is a server's name in the platform's
// PKI: "server." followed by at least two more labels.
func IsServerName(name string) bool {
	rest, ok := strings.CutPrefix(name, "server.")
	if !ok {
		return false
	}
	labels := strings.Split(rest, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || strings.Contains(l, "*") {
			return false
		}
	}
	return true
}

func ipStrings(c *x509.Certificate) []string {
	var out []string
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}
