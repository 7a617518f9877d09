package platform_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/consul"
	"github.com/platform-bootstrap/bootstrap/stages/nomad"
)

// rotateTokens is issue 18's token rotation on the running platform: every
// rotatable token is replaced, with a run killed at each new step, while
// dev's application answers through its Fabio. Afterwards each stored token
// and its Vault KV copy are new, every old token is refused by Consul or
// Nomad, Prometheus scrapes with the new ones, and a plan shows nothing.
func rotateTokens(t *testing.T, p *platformtest.Platform) {
	env := p.Env("admin")
	secret := func(name string) string {
		b, err := os.ReadFile(filepath.Join(p.StateDir(), "secrets", name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	consulTokens := []string{stages.SecretConsulBootstrapToken, stages.SecretConsulOperatorToken, stages.SecretConsulPrometheusToken}
	nomadTokens := []string{stages.SecretNomadBootstrapToken, stages.SecretNomadUIToken, stages.SecretNomadPrometheusToken, stages.SecretNomadDeployToken("dev"), stages.SecretNomadDeployToken("prod")}
	old := map[string]string{}
	for _, name := range append(consulTokens, nomadTokens...) {
		old[name] = secret(name)
	}

	// dev's application answers through its Fabio all along: nothing on
	// its path changes.
	poll := startPoller(func() error { return get200(env["FABIO_DEV_ADDR"] + "/web/") })

	for _, cp := range []string{"consul:rotate-after-create", "consul:rotate-after-retire", "nomad:rotate-after-create", "nomad:rotate-after-retire", "jobs:after-register"} {
		r := p.Run([]string{"rotate", "tokens"}, "BOOTSTRAP_CRASHPOINT="+cp)
		if r.Code != -1 { // killed by the signal
			t.Fatalf("the crash point %s did not fire: exit %d\n%s", cp, r.Code, r.Output())
		}
		// Until the rotation ends, the old management tokens still work:
		// a kill never locks bootstrap or a user out.
		if _, _, err := nomadClient(t, env, old[stages.SecretNomadBootstrapToken]).ACLTokens().Self(nil); err != nil {
			t.Errorf("after the kill at %s the old Nomad management token is refused: %v", cp, err)
		}
	}
	if r := p.Run([]string{"plan"}); r.Code != 4 || !strings.Contains(r.Stdout, "retired") {
		t.Errorf("plan after the kills: exit %d, want 4 and the retired tokens to delete\n%s", r.Code, r.Output())
	}
	// Prometheus's Consul token changed: its discovery is proven again.
	if r := p.Up(); !strings.Contains(r.Stdout, "the probe runs") {
		t.Errorf("up after the token rotation did not probe Prometheus's discovery with its new Consul token:\n%s", r.Stdout)
	}
	poll.stop(t, "requests to dev's application during the token rotation")
	if r := p.Run([]string{"plan"}); r.Code != 0 {
		t.Errorf("plan after the rotation: exit %d\n%s", r.Code, r.Output())
	}

	env = p.Env("admin")
	vc := vaultClient(t, env)
	for name, was := range old {
		now := secret(name)
		if now == was {
			t.Errorf("%s was not replaced", name)
			continue
		}
		if differs, err := pki.KVDiffers(t.Context(), vc, name, now); err != nil || differs {
			t.Errorf("the Vault KV copy of %s is not the new token (differs %v, %v)", name, differs, err)
		}
	}
	for _, name := range consulTokens {
		c, err := consul.NewClient(env["CONSUL_HTTP_ADDR"], env["CONSUL_CACERT"], old[name])
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.ACL().TokenReadSelf(nil); err == nil {
			t.Errorf("consul accepts the old %s", name)
		}
		c, _ = consul.NewClient(env["CONSUL_HTTP_ADDR"], env["CONSUL_CACERT"], secret(name))
		if _, _, err := c.ACL().TokenReadSelf(nil); err != nil {
			t.Errorf("consul refuses the new %s: %v", name, err)
		}
	}
	for _, name := range nomadTokens {
		if _, _, err := nomadClient(t, env, old[name]).ACLTokens().Self(nil); err == nil {
			t.Errorf("nomad accepts the old %s", name)
		}
		if _, _, err := nomadClient(t, env, secret(name)).ACLTokens().Self(nil); err != nil {
			t.Errorf("nomad refuses the new %s: %v", name, err)
		}
	}
	// The attack that matters: a leaked CI token is useless once rotated.
	if _, _, err := nomadClient(t, env, old[stages.SecretNomadDeployToken("dev")]).Jobs().List(&nomadapi.QueryOptions{Namespace: "dev"}); err == nil {
		t.Error("the old dev CI token still lists dev's jobs")
	}
	if jobs, _, err := nomadClient(t, env, secret(stages.SecretNomadDeployToken("dev"))).Jobs().List(&nomadapi.QueryOptions{Namespace: "dev"}); err != nil || len(jobs) == 0 {
		t.Errorf("the new dev CI token lists %d of dev's jobs: %v", len(jobs), err)
	}
	for _, what := range []string{"nomad", "consul"} {
		if n := retiredTokens(t, env, what); n > 0 {
			t.Errorf("%d retired %s tokens left", n, what)
		}
	}
	// Prometheus discovers and scrapes Consul and Nomad with the new
	// tokens (the old ones are gone).
	scrapesClusters(t, env)
}

func nomadClient(t *testing.T, env map[string]string, token string) *nomadapi.Client {
	t.Helper()
	c, err := nomad.NewClient(env["NOMAD_ADDR"], env["NOMAD_CACERT"], token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func vaultClient(t *testing.T, env map[string]string) *vaultapi.Client {
	t.Helper()
	cfg := vaultapi.DefaultConfig()
	cfg.Address = env["VAULT_ADDR"]
	if err := cfg.ConfigureTLS(&vaultapi.TLSConfig{CACert: env["VAULT_CACERT"]}); err != nil {
		t.Fatal(err)
	}
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(env["VAULT_TOKEN"])
	return c
}

// retiredTokens counts the tokens a rotation retired that still exist.
func retiredTokens(t *testing.T, env map[string]string, product string) int {
	t.Helper()
	n := 0
	if product == "nomad" {
		list, _, err := nomadClient(t, env, env["NOMAD_TOKEN"]).ACLTokens().List(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range list {
			if strings.HasPrefix(tok.Name, stages.RetiredTokenPrefix) {
				n++
			}
		}
		return n
	}
	c, err := consul.NewClient(env["CONSUL_HTTP_ADDR"], env["CONSUL_CACERT"], env["CONSUL_HTTP_TOKEN"])
	if err != nil {
		t.Fatal(err)
	}
	list, _, err := c.ACL().TokenList(&consulapi.QueryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range list {
		if strings.HasPrefix(tok.Description, stages.RetiredTokenPrefix) {
			n++
		}
	}
	return n
}

// rotateCAs is issue 18's CA rotation on the running platform: new Consul
// and Nomad intermediates, with a run killed at three points, while dev's
// application answers through its Fabio and the clusters are read through
// their APIs. Afterwards every agent serves a certificate of the new CA,
// no agent restarted, the old intermediates are revoked at their roots and
// gone from Vault, Prometheus still scrapes, and a plan shows nothing.
func rotateCAs(t *testing.T, p *platformtest.Platform) {
	env := p.Env("admin")
	inv, err := inventory.LoadSaved(filepath.Join(p.StateDir(), "inventory.json"))
	if err != nil {
		t.Fatal(err)
	}
	type agent struct{ node, addr, caFile string }
	var agents []agent
	var names []string
	for _, n := range inv.Nodes {
		names = append(names, n.Name)
		agents = append(agents,
			agent{n.Name + "/consul", stages.ConsulAddr(n), env["CONSUL_CACERT"]},
			agent{n.Name + "/nomad", net.JoinHostPort(n.APIAddress(), fmt.Sprint(stages.NomadHTTPPort)), env["NOMAD_CACERT"]})
	}
	served := func(a agent) *x509.Certificate {
		t.Helper()
		tc, err := apitls.Config(a.caFile, "")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", a.addr, tc)
		if err != nil {
			t.Fatalf("%s: %v", a.node, err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	vc := vaultClient(t, env)
	before := map[string]pki.IntermediateMount{}
	for _, ca := range stages.RotatableCAs() {
		if before[ca], err = pki.PlatformIntermediate(t.Context(), vc, ca); err != nil {
			t.Fatal(err)
		}
	}
	pids := agentPids(t, p, names...)

	poll := startPoller(appAndClusters(t, env)...)
	for _, cp := range []string{"pki/intermediate-signed", "pki/rotate-before-default", "pki/retire-after-revoke"} {
		if r := p.Run([]string{"rotate", "ca"}, "BOOTSTRAP_CRASHPOINT="+cp); r.Code != -1 {
			t.Fatalf("the crash point %s did not fire: exit %d\n%s", cp, r.Code, r.Output())
		}
	}
	p.Up()
	poll.stop(t, "requests to dev's application, Consul and Nomad during the CA rotation")
	if r := p.Run([]string{"plan"}); r.Code != 0 {
		t.Errorf("plan after the rotation: exit %d\n%s", r.Code, r.Output())
	}

	for _, ca := range stages.RotatableCAs() {
		now, err := pki.PlatformIntermediate(t.Context(), vc, ca)
		if err != nil {
			t.Fatal(err)
		}
		if now.Current.Equal(before[ca].Current) {
			t.Errorf("%s: the intermediate CA was not replaced", ca)
		}
		if len(now.Old) > 0 {
			t.Errorf("%s: left after the rotation: %v", ca, now.Old)
		}
		rev, err := vc.Logical().Read(ca + "/root-ca/cert/" + pki.Serial(before[ca].Current))
		if err != nil || rev == nil {
			t.Fatalf("%s: read the old intermediate at the root: %v", ca, err)
		}
		if n, _ := rev.Data["revocation_time"].(json.Number).Int64(); n == 0 {
			t.Errorf("%s: the old intermediate is not revoked at the root", ca)
		}
		for _, a := range agents {
			if !strings.HasSuffix(a.node, "/"+ca) {
				continue
			}
			if leaf := served(a); leaf.CheckSignatureFrom(now.Current) != nil {
				t.Errorf("%s serves a certificate of %s, not of the new CA", a.node, leaf.Issuer)
			}
		}
	}
	if after := agentPids(t, p, names...); !maps.Equal(after, pids) {
		t.Errorf("agents restarted during the CA rotation: before %v, after %v", pids, after)
	}
	scrapesClusters(t, env)
}

// scrapesClusters waits until Prometheus discovers the platform's services
// through Consul and scrapes every Consul and Nomad agent.
func scrapesClusters(t *testing.T, env map[string]string) {
	t.Helper()
	eventually(t, 2*time.Minute, "prometheus scraping consul and nomad", func() error {
		pools := scrapePools(t, env["PROMETHEUS_ADDR"])
		for _, pool := range []string{"consul", "nomad-server", "nomad-client"} {
			if h := pools[pool]; h.all == 0 || h.up != h.all {
				return fmt.Errorf("scrape pool %s: %d / %d up", pool, h.up, h.all)
			}
		}
		if h := pools["consul_sd_metrics"]; h.all < 7 {
			return fmt.Errorf("consul_sd_metrics: %d targets discovered", h.all)
		}
		return nil
	})
}

// appAndClusters are the probes of a rolling operation that promises no
// downtime: dev's application through its Fabio, and reads of Consul and
// Nomad through server-1 that any server answers from its own state (a
// leader election does not hold them up).
func appAndClusters(t *testing.T, env map[string]string) []func() error {
	return append([]func() error{func() error { return get200(env["FABIO_DEV_ADDR"] + "/web/") }}, clusterProbes(t, env)...)
}

// clusterProbes read Consul's catalog and Nomad's jobs through the
// addresses a user has.
func clusterProbes(t *testing.T, env map[string]string) []func() error {
	cc, err := consul.NewClient(env["CONSUL_HTTP_ADDR"], env["CONSUL_CACERT"], env["CONSUL_HTTP_TOKEN"])
	if err != nil {
		t.Fatal(err)
	}
	nc := nomadClient(t, env, env["NOMAD_TOKEN"])
	return []func() error{
		func() error {
			_, _, err := cc.Catalog().Nodes(&consulapi.QueryOptions{AllowStale: true})
			return err
		},
		func() error {
			_, _, err := nc.Jobs().List(&nomadapi.QueryOptions{AllowStale: true, Namespace: "*"})
			return err
		},
	}
}

// poller calls its probes every 250 ms until stopped and keeps the first
// failures.
type poller struct {
	mu       sync.Mutex
	rounds   int
	failures []string
	cancel   context.CancelFunc
	done     sync.WaitGroup
}

func startPoller(probes ...func() error) *poller {
	ctx, cancel := context.WithCancel(context.Background())
	p := &poller{cancel: cancel}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		for ctx.Err() == nil {
			for _, probe := range probes {
				if err := probe(); err != nil {
					p.mu.Lock()
					if len(p.failures) < 20 {
						p.failures = append(p.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
					}
					p.mu.Unlock()
				}
			}
			p.mu.Lock()
			p.rounds++
			p.mu.Unlock()
			time.Sleep(250 * time.Millisecond)
		}
	}()
	return p
}

// stop stops the poller and fails the test if any request failed.
func (p *poller) stop(t *testing.T, what string) {
	t.Helper()
	p.cancel()
	p.done.Wait()
	t.Logf("%d rounds of %s, %d failed", p.rounds, what, len(p.failures))
	if len(p.failures) > 0 {
		t.Errorf("%s failed: %s", what, strings.Join(p.failures, "; "))
	}
}
