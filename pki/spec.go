// Package pki configures Vault as the platform's certificate authority: a
// root and an intermediate CA each for Consul and Nomad with the roles that
// consul-template issues agent certificates from, application CAs from the
// configuration, the policies and identities that use them, and the admin
// identity that replaces the root token.
//
// Everything is idempotent by asking Vault: each mount, issuer, role,
// policy, auth method and identity is read and compared with the Spec, and
// only the difference is written. A CA that exists is never regenerated.
package pki

import (
	"errors"
	"fmt"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/config"
)

// Names other stages use to find what this package creates.
const (
	ConsulRootMount         = "consul/root-ca"
	ConsulIntermediateMount = "consul/inter-ca"
	NomadRootMount          = "nomad/root-ca"
	NomadIntermediateMount  = "nomad/inter-ca"

	PolicyConsulTemplateServer = "consul-template-server"
	PolicyConsulTemplateClient = "consul-template-client"
	PolicyAdmin                = "admin"
	PolicyNomadWorkloads       = "nomad-workloads"

	// KVMount is the KV v2 engine holding application secrets and copies of
	// the tokens bootstrap generates (under KVPrefix).
	KVMount  = "secret"
	KVPrefix = "bootstrap"

	UserpassPath = "userpass"
	AdminUser    = "admin"
	AppRolePath  = "approle"
	// JWTNomadPath is the JWT auth method Nomad workload identities log in
	// with; the nomad stage configures it once Nomad's JWKS URL exists.
	JWTNomadPath = "jwt-nomad"

	// platformIntermediate names the Consul and Nomad intermediates, so their
	// mounts are "<ca>/inter-ca".
	platformIntermediate = "ca"

	defaultKeyType = "ec"
)

// ConsulRole is the consul intermediate's role for kind "server" or
// "client" agents of a datacenter, e.g. "server-dc1".
func ConsulRole(kind, datacenter string) string { return kind + "-" + datacenter }

// NomadRole is the nomad intermediate's role for kind "server" or "client"
// agents of a region, e.g. "server-global".
func NomadRole(kind, region string) string { return kind + "-" + region }

// IssuePath is the path a certificate is issued from, e.g.
// "nomad/inter-ca/issue/server-global".
func IssuePath(mount, role string) string { return mount + "/issue/" + role }

// AppRolePolicy is the policy of an application's AppRole.
func AppRolePolicy(name string) string { return "approle-" + name }

// Spec is the PKI the platform should have.
type Spec struct {
	// Addr is Vault's address, used in the CRL and issuing-certificate URLs
	// written into every certificate.
	Addr string

	Datacenter   string
	Region       string
	ConsulDomain string

	RootTTL         time.Duration
	IntermediateTTL time.Duration
	LeafTTL         time.Duration

	// CAs are the application CAs; Consul's and Nomad's are derived from
	// the fields above (see AllCAs).
	CAs      []CA
	AppRoles []AppRole

	RevokeRootToken bool
}

// CA is a root certificate authority in its own mount "<Name>/root-ca",
// with intermediates in "<Name>/inter-<intermediate>".
type CA struct {
	Name          string
	CommonName    string
	TTL           time.Duration
	KeyType       string
	KeyBits       int
	Intermediates []Intermediate
	Roles         []Role
}

// Intermediate is a CA signed by its root.
type Intermediate struct {
	Name       string
	CommonName string
	TTL        time.Duration
}

// Role is a PKI role: what may be issued, and from which issuer.
type Role struct {
	Name string
	// Issuer is the intermediate whose mount holds the role; "" is the root.
	Issuer           string
	AllowedDomains   []string
	AllowSubdomains  bool
	AllowBareDomains bool
	AllowAnyName     bool
	AllowIPSANs      bool
	ServerFlag       bool
	ClientFlag       bool
	KeyUsage         []string
	ExtKeyUsage      []string
	KeyType          string
	KeyBits          int
	TTL              time.Duration
	MaxTTL           time.Duration
}

// AppRole is an application identity allowed to issue from its CAs' roles.
type AppRole struct {
	Name     string
	CAs      []string
	TokenTTL time.Duration
	// SecretIDTTL bounds the life of a secret ID; a run issues a new one
	// once half of it has passed.
	SecretIDTTL time.Duration
}

// DefaultSecretIDTTL is an AppRole's secret ID lifetime unless the
// configuration sets secret_id_ttl: a month, renewed after two weeks.
const DefaultSecretIDTTL = 720 * time.Hour

// RootMount is the mount of the CA's root.
func (c CA) RootMount() string { return c.Name + "/root-ca" }

// IntermediateMount is the mount of the named intermediate.
func (c CA) IntermediateMount(name string) string { return c.Name + "/inter-" + name }

// RoleMount is the mount that holds r.
func (c CA) RoleMount(r Role) string {
	if r.Issuer == "" {
		return c.RootMount()
	}
	return c.IntermediateMount(r.Issuer)
}

// Mounts lists the CA's mounts, root first.
func (c CA) Mounts() []string {
	m := []string{c.RootMount()}
	for _, in := range c.Intermediates {
		m = append(m, c.IntermediateMount(in.Name))
	}
	return m
}

// Vault's default key usage for roles; written explicitly so removing
// key_usage from the configuration restores it.
var defaultKeyUsage = []string{"DigitalSignature", "KeyAgreement", "KeyEncipherment"}

// AllCAs returns Consul's CA, Nomad's CA and the application CAs.
func (s Spec) AllCAs() []CA {
	agentRole := func(kind string, domain string) Role {
		return Role{
			Name:             kind,
			Issuer:           platformIntermediate,
			AllowedDomains:   []string{domain, "localhost"},
			AllowBareDomains: true,
			AllowIPSANs:      true,
			ServerFlag:       true,
			ClientFlag:       true,
			KeyType:          defaultKeyType,
			KeyBits:          256,
			TTL:              s.LeafTTL,
			MaxTTL:           s.LeafTTL,
		}
	}
	platform := func(name, title string, roles ...Role) CA {
		return CA{
			Name:       name,
			CommonName: title + " Root CA",
			TTL:        s.RootTTL,
			KeyType:    defaultKeyType,
			KeyBits:    256,
			Intermediates: []Intermediate{{
				Name:       platformIntermediate,
				CommonName: title + " Intermediate CA",
				TTL:        s.IntermediateTTL,
			}},
			Roles: roles,
		}
	}
	dc, region := s.Datacenter, s.Region
	consul := platform("consul", "Consul "+dc,
		named(agentRole("server", "server."+dc+"."+s.ConsulDomain), ConsulRole("server", dc)),
		named(agentRole("client", "client."+dc+"."+s.ConsulDomain), ConsulRole("client", dc)))
	nomad := platform("nomad", "Nomad "+region,
		named(agentRole("server", "server."+region+".nomad"), NomadRole("server", region)),
		named(agentRole("client", "client."+region+".nomad"), NomadRole("client", region)))
	return append([]CA{consul, nomad}, s.CAs...)
}

func named(r Role, name string) Role { r.Name = name; return r }

// FromConfig builds the Spec of a validated configuration. addr is Vault's
// address.
func FromConfig(p *config.Platform, addr string) (Spec, error) {
	k := p.PKI
	var errs []error
	dur := func(s string, def time.Duration, what string) time.Duration {
		if s == "" {
			return def
		}
		d, err := config.ParseDuration(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("pki: %s = %q: %w", what, s, err))
		}
		return d
	}
	s := Spec{
		Addr:            addr,
		Datacenter:      p.Datacenter,
		Region:          p.Region,
		ConsulDomain:    p.Consul.Domain,
		RootTTL:         dur(k.RootTTL, 87600*time.Hour, "root_ttl"),
		IntermediateTTL: dur(k.IntermediateTTL, 43800*time.Hour, "intermediate_ttl"),
		LeafTTL:         dur(k.LeafTTL, 24*time.Hour, "leaf_ttl"),
		RevokeRootToken: k.RevokeRootToken,
	}
	if s.ConsulDomain == "" {
		s.ConsulDomain = "consul"
	}
	for _, c := range k.CAs {
		ca := CA{
			Name:       c.Name,
			CommonName: c.CommonName,
			TTL:        dur(c.TTL, s.RootTTL, "ca "+c.Name+" ttl"),
			KeyType:    c.KeyType,
			KeyBits:    c.KeyBits,
		}
		if ca.KeyType == "" {
			ca.KeyType = defaultKeyType
		}
		ca.KeyBits = keyBits(ca.KeyType, ca.KeyBits)
		for _, in := range c.Intermediates {
			ca.Intermediates = append(ca.Intermediates, Intermediate{
				Name:       in.Name,
				CommonName: in.CommonName,
				TTL:        dur(in.TTL, s.IntermediateTTL, "intermediate "+in.Name+" ttl"),
			})
		}
		for _, r := range c.Roles {
			role := Role{
				Name:             r.Name,
				Issuer:           r.Issuer,
				AllowedDomains:   r.AllowedDomains,
				AllowSubdomains:  r.AllowSubdomains,
				AllowBareDomains: r.AllowBareDomain,
				AllowAnyName:     r.AllowAnyName,
				AllowIPSANs:      r.AllowIPSANs,
				ServerFlag:       r.ServerFlag,
				ClientFlag:       r.ClientFlag,
				KeyUsage:         r.KeyUsage,
				ExtKeyUsage:      r.ExtKeyUsage,
				KeyType:          r.KeyType,
				KeyBits:          r.KeyBits,
				TTL:              dur(r.TTL, s.LeafTTL, "role "+r.Name+" ttl"),
			}
			if role.KeyType == "" {
				role.KeyType = ca.KeyType
				if role.KeyBits == 0 {
					role.KeyBits = ca.KeyBits
				}
			}
			role.KeyBits = keyBits(role.KeyType, role.KeyBits)
			role.MaxTTL = dur(r.MaxTTL, role.TTL, "role "+r.Name+" max_ttl")
			ca.Roles = append(ca.Roles, role)
		}
		s.CAs = append(s.CAs, ca)
	}
	for _, a := range k.AppRoles {
		s.AppRoles = append(s.AppRoles, AppRole{
			Name:        a.Name,
			CAs:         a.CAs,
			TokenTTL:    dur(a.TokenTTL, time.Hour, "approle "+a.Name+" token_ttl"),
			SecretIDTTL: dur(a.SecretIDTTL, DefaultSecretIDTTL, "approle "+a.Name+" secret_id_ttl"),
		})
	}
	if len(errs) > 0 {
		return Spec{}, errors.Join(errs...)
	}
	return s, nil
}

// keyBits fills in Vault's default size for a key type, so the value read
// back from Vault compares equal.
func keyBits(keyType string, bits int) int {
	if bits != 0 {
		return bits
	}
	switch keyType {
	case "rsa":
		return 2048
	case "ec":
		return 256
	}
	return 0
}
