package main

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/parallel"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
	nomadstage "github.com/platform-bootstrap/bootstrap/stages/nomad"
)

// nomad is the nomad stage's work: every agent started at once, a leader,
// the ACL bootstrap with a token stored first, namespaces, policies and
// tokens (copied to Vault KV), Vault's JWT auth for workload identities,
// Consul's auth method and binding rules for service identities, and
// every client ready.
func (p *platform) nomad(ctx context.Context) error {
	gossip, _, err := p.e.Secrets.Get(stages.SecretNomadGossipKey)
	if err != nil {
		return err
	}
	consulToken, _, err := p.e.Secrets.Get(stages.SecretConsulNomadAgentToken)
	if err != nil {
		return err
	}
	servers := p.inv.WithRole(inventory.RoleServer)
	for k, v := range map[string]string{
		stages.OutNomadAddr:          stages.NomadAddr(servers[0]),
		stages.OutNomadCACert:        p.e.CAFile("nomad"),
		stages.OutNomadTLSServerName: p.e.NomadServerName(),
	} {
		if err := p.e.State.SetOutput(k, v); err != nil {
			return err
		}
	}
	agentConfig := func(n inventory.Node) string {
		return p.nomadConfig(n, strings.TrimSpace(gossip), strings.TrimSpace(consulToken))
	}
	leader := func(ctx context.Context, n inventory.Node) (string, error) {
		c, err := cluster.NomadAgent(p.e, n, "")
		if err != nil {
			return "", err
		}
		var leader string
		_, err = c.Raw().Query("/v1/status/leader", &leader, (&nomadapi.QueryOptions{}).WithContext(ctx))
		return leader, err
	}
	// Servers first, clients once there is a leader, as the nomad role
	// does: a client that registers before the leader's keyring exists is
	// refused and retries only 15-30 s later.
	if err := p.startAgents("nomad", servers, agentConfig); err != nil {
		return err
	}
	// The servers that are not clients run node-exporter as a service, as
	// the nomad stage's role starts it there.
	for _, n := range servers {
		if n.Has(inventory.RoleClient) {
			continue
		}
		addr := net.JoinHostPort(n.Address(), fmt.Sprint(stages.NodeExporterPort))
		if err := p.ps.start(n.Local.Root, path(n, "logs", "node-exporter.log"), p.bin+"/prometheus-node-exporter", "--web.listen-address="+addr, "--no-collector.systemd"); err != nil {
			return err
		}
	}
	if err := p.waitLeader(ctx, servers, leader); err != nil {
		return fmt.Errorf("leader: %w", err)
	}
	if err := p.startAgents("nomad", p.inv.WithRole(inventory.RoleClient), agentConfig); err != nil {
		return err
	}
	if err := p.waitLeader(ctx, p.inv.Nodes, leader); err != nil {
		return fmt.Errorf("leader: %w", err)
	}

	mgmt, _, err := p.e.Secrets.GetOrCreate(stages.SecretNomadBootstrapToken, secrets.NewUUID)
	if err != nil {
		return err
	}
	p.nomadMgmt = mgmt
	c, err := cluster.NomadAgent(p.e, servers[0], mgmt)
	if err != nil {
		return err
	}
	if err := poll(ctx, 100*time.Millisecond, func() error {
		_, _, err := c.ACLTokens().BootstrapOpts(mgmt, (&nomadapi.WriteOptions{}).WithContext(ctx))
		return err
	}); err != nil {
		return fmt.Errorf("ACL bootstrap: %w", err)
	}
	vc, err := p.vaultClient(ctx)
	if err != nil {
		return err
	}
	w := (&nomadapi.WriteOptions{}).WithContext(ctx)
	cfg := p.e.Config
	var work []func() error
	work = append(work, func() error {
		_, err := c.Namespaces().Register(&nomadapi.Namespace{Name: config.GeneralNamespace, Description: "Platform jobs: ingress, monitoring, CI runners"}, w)
		return err
	})
	for _, ns := range cfg.Nomad.Namespaces {
		work = append(work, func() error {
			_, err := c.Namespaces().Register(&nomadapi.Namespace{Name: ns, Description: "Applications (" + ns + ")",
				Capabilities: &nomadapi.NamespaceCapabilities{EnabledTaskDrivers: nomadstage.AppDrivers}}, w)
			return err
		})
	}
	type token struct {
		name, secret, policy string
	}
	toks := []token{{"ui-read", stages.SecretNomadUIToken, "ui-read"}, {"prometheus", stages.SecretNomadPrometheusToken, "prometheus-metrics"}}
	for _, ns := range stages.DeployNamespaces(cfg) {
		toks = append(toks, token{"ci-" + ns, stages.SecretNomadDeployToken(ns), nomadstage.DeployPolicy(ns)})
	}
	pols := nomadstage.Policies(cfg)
	work = append(work, func() error {
		var ups []func() error
		for name, rules := range pols {
			ups = append(ups, func() error {
				_, err := c.ACLPolicies().Upsert(&nomadapi.ACLPolicy{Name: name, Description: "bootstrap", Rules: rules}, w)
				return err
			})
		}
		if err := parallel.Do(ups...); err != nil {
			return fmt.Errorf("policies: %w", err)
		}
		var creates []func() error
		for _, t := range toks {
			creates = append(creates, func() error {
				created, _, err := c.ACLTokens().Create(&nomadapi.ACLToken{Name: "bootstrap: " + t.name, Type: "client", Policies: []string{t.policy}, Global: true}, w)
				if err != nil {
					return fmt.Errorf("token %s: %w", t.name, err)
				}
				if err := p.e.Secrets.Put(t.secret, created.SecretID); err != nil {
					return err
				}
				return pki.StoreKV(ctx, vc, t.secret, created.SecretID)
			})
		}
		return parallel.Do(creates...)
	})
	work = append(work,
		func() error { return pki.StoreKV(ctx, vc, stages.SecretNomadBootstrapToken, mgmt) },
		func() error { return p.jwtAuth(ctx) },
		func() error { return p.consulAuthMethod(ctx) },
	)
	if err := parallel.Do(work...); err != nil {
		return err
	}
	return p.waitClients(ctx, c)
}

// jwtAuth configures Vault's jwt-nomad auth method to trust Nomad's
// workload identities (stages/nomad jwtWant).
func (p *platform) jwtAuth(ctx context.Context) error {
	vc, err := p.vaultClient(ctx)
	if err != nil {
		return err
	}
	ca, err := readFile(p.e.CAFile("nomad"))
	if err != nil {
		return err
	}
	var pairs []any
	for _, n := range p.inv.WithRole(inventory.RoleServer) {
		pairs = append(pairs, map[string]any{"jwks_url": stages.NomadAddr(n) + "/.well-known/jwks.json", "jwks_ca_pem": ca})
	}
	if _, err := vc.Logical().WriteWithContext(ctx, "auth/jwt-nomad/config", map[string]any{
		"jwks_pairs": pairs, "jwt_supported_algs": []string{"RS256", "EdDSA"}, "default_role": "nomad-workloads",
	}); err != nil {
		return fmt.Errorf("vault jwt-nomad config: %w", err)
	}
	_, err = vc.Logical().WriteWithContext(ctx, "auth/jwt-nomad/role/nomad-workloads", map[string]any{
		"role_type": "jwt", "bound_audiences": []string{"vault.io"},
		"user_claim": "/nomad_job_id", "user_claim_json_pointer": true,
		"claim_mappings": map[string]any{"nomad_namespace": "nomad_namespace", "nomad_job_id": "nomad_job_id", "nomad_task": "nomad_task"},
		"token_type":     "service", "token_policies": []string{pki.PolicyNomadWorkloads}, "token_period": 1800,
	})
	if err != nil {
		return fmt.Errorf("vault jwt-nomad role: %w", err)
	}
	return nil
}

// consulAuthMethod gives Consul Nomad's public signing keys and the
// binding rules of service identities (stages/nomad consulwi.go).
func (p *platform) consulAuthMethod(ctx context.Context) error {
	servers := p.inv.WithRole(inventory.RoleServer)
	nc, err := cluster.NomadAgent(p.e, servers[0], "")
	if err != nil {
		return err
	}
	var set struct {
		Keys []struct{ Kid, Kty, N, E string }
	}
	if _, err := nc.Raw().Query("/.well-known/jwks.json", &set, (&nomadapi.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("nomad signing keys: %w", err)
	}
	var keys []any
	for _, k := range set.Keys {
		if k.Kty != "RSA" {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())})
		if err != nil {
			return err
		}
		keys = append(keys, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	}
	if len(keys) == 0 {
		return errors.New("no RS256 signing key in /.well-known/jwks.json")
	}
	c, err := cluster.ConsulAgent(p.e, servers[0], p.consulMgmt)
	if err != nil {
		return err
	}
	w := (&consulapi.WriteOptions{}).WithContext(ctx)
	const method = "nomad-workloads"
	if _, _, err := c.ACL().AuthMethodCreate(&consulapi.ACLAuthMethod{
		Name: method, Type: "jwt", DisplayName: "Nomad workload identities", Description: "bootstrap",
		Config: map[string]any{
			"JWTValidationPubKeys": keys,
			"JWTSupportedAlgs":     []any{"RS256"},
			"BoundAudiences":       []any{"consul.io"},
			"ClaimMappings":        map[string]any{"nomad_namespace": "nomad_namespace", "nomad_job_id": "nomad_job_id", "nomad_service": "nomad_service"},
		},
	}, w); err != nil {
		return fmt.Errorf("consul auth method: %w", err)
	}
	sels := []string{fmt.Sprintf("value.nomad_namespace==%q", config.GeneralNamespace)}
	for _, ns := range p.e.Config.Nomad.Namespaces {
		sels = append(sels, fmt.Sprintf("value.nomad_namespace==%q and value.nomad_service matches %q", ns, "^"+ns+"-[a-z0-9-]+$"))
	}
	var rules []func() error
	for _, sel := range sels {
		rules = append(rules, func() error {
			_, _, err := c.ACL().BindingRuleCreate(&consulapi.ACLBindingRule{AuthMethod: method, Description: "bootstrap", Selector: sel,
				BindType: consulapi.BindingRuleBindTypeService, BindName: "${value.nomad_service}"}, w)
			return err
		})
	}
	return parallel.Do(rules...)
}

// waitClients waits until every client is ready and eligible with a
// healthy raw_exec driver.
func (p *platform) waitClients(ctx context.Context, c *nomadapi.Client) error {
	return poll(ctx, 100*time.Millisecond, func() error {
		nodes, _, err := c.Nodes().List((&nomadapi.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		ready := 0
		for _, n := range nodes {
			if d := n.Drivers["raw_exec"]; n.Status == "ready" && n.SchedulingEligibility == "eligible" && d != nil && d.Healthy {
				ready++
			}
		}
		if want := len(p.inv.WithRole(inventory.RoleClient)); ready < want {
			return fmt.Errorf("%d of %d clients ready", ready, want)
		}
		return nil
	})
}
