package pki

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// testNodes is the inventory the harness records: two nodes of the local
// provider (their tokens accept 127.0.0.1, where the tests run) and a
// machine elsewhere, whose token must not work from here.
func testNodes(dir string) []inventory.Node {
	local := func(name string) *inventory.Local {
		return &inventory.Local{Root: filepath.Join(dir, "nodes", name), BinDir: filepath.Join(dir, "bin")}
	}
	return []inventory.Node{
		{Name: "server-1", Roles: []string{"server", "vault"}, PrivateIP: "127.0.1.1", Local: local("server-1")},
		{Name: "client-1", Roles: []string{"client"}, PrivateIP: "127.0.1.4", Local: local("client-1")},
		{Name: "client-2", Roles: []string{"client"}, PrivateIP: "192.0.2.10", PublicIP: "198.51.100.10", SSH: inventory.SSH{User: "root", Port: 22}},
	}
}

// setInventory records nodes as the provision stage does.
func setInventory(t testing.TB, e *stages.Env, nodes []inventory.Node) {
	t.Helper()
	inv := &inventory.Inventory{Version: 1, Nodes: nodes}
	path := e.Path("inventory.json")
	if err := inv.Save(path); err != nil {
		t.Fatal(err)
	}
	if err := e.State.SetOutput(stages.OutInventory, path); err != nil {
		t.Fatal(err)
	}
}

func TestConsulTemplateCIDRs(t *testing.T) {
	for _, tc := range []struct {
		node inventory.Node
		want []string
	}{
		{inventory.Node{PrivateIP: "127.0.1.4", Local: &inventory.Local{}}, []string{"127.0.0.1/32", "127.0.1.4/32"}},
		{inventory.Node{PrivateIP: "10.0.0.5"}, []string{"10.0.0.5/32"}},
		// A static inventory of loopback machines (the SSH tests) shares one host too.
		{inventory.Node{PrivateIP: "127.58.116.1"}, []string{"127.0.0.1/32", "127.58.116.1/32"}},
		{inventory.Node{PrivateIP: "10.0.0.5", PublicIP: "203.0.113.7"}, []string{"10.0.0.5/32", "203.0.113.7/32"}},
		{inventory.Node{PrivateIP: "fd00::5", PublicIP: "fd00::5"}, []string{"fd00::5/128"}},
	} {
		if got := ConsulTemplateCIDRs(tc.node); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.node, got, tc.want)
		}
	}
}

func TestSameCIDRs(t *testing.T) {
	// Vault reads a single host back without its length.
	if !sameCIDRs([]string{"10.0.0.5", "127.0.0.1"}, []string{"127.0.0.1/32", "10.0.0.5/32"}) {
		t.Error("the same hosts differ")
	}
	for _, got := range [][]string{nil, {"10.0.0.5"}, {"10.0.0.0/24", "127.0.0.1"}, {"10.0.0.6", "127.0.0.1"}} {
		if sameCIDRs(got, []string{"127.0.0.1/32", "10.0.0.5/32"}) {
			t.Errorf("%q passed for 127.0.0.1/32, 10.0.0.5/32", got)
		}
	}
}

// lookup returns what Vault knows of tok, asked by the admin.
func lookup(t *testing.T, admin *api.Client, tok string) *api.Secret {
	t.Helper()
	s, err := admin.Logical().ReadWithData("auth/token/lookup", map[string][]string{"token": {tok}})
	if err != nil {
		return nil
	}
	return s
}

// TestConsulTemplateTokens checks that every node gets a token of its own,
// bound to its addresses, with its kind's rights only; that tokens follow
// the inventory (a new address, a node removed) and replace the tokens
// earlier versions shared; and that a converged run writes nothing.
func TestConsulTemplateTokens(t *testing.T) {
	h := newHarness(t, "")
	dc, region := h.cfg.Datacenter, h.cfg.Region
	mark := h.auditMark()
	plan := h.plan()
	if w := h.writesSince(mark); len(w) > 0 {
		t.Fatalf("plan wrote to vault: %q", w)
	}
	for _, n := range testNodes(h.env.StateDir) {
		role := ConsulTemplateTokenRole(n.Name)
		if !slices.ContainsFunc(plan.Changes, func(c stages.Change) bool {
			return c.Action == "create" && c.Target == "vault token "+role && strings.Contains(c.Detail, "bound to "+strings.Join(ConsulTemplateCIDRs(n), ","))
		}) {
			t.Errorf("the plan does not create %s's token:\n%s", n.Name, changeList(plan.Changes))
		}
	}
	h.apply()
	mark = h.auditMark()
	if p := h.plan(); len(p.Changes) > 0 {
		t.Fatalf("plan after apply:\n%s", changeList(p.Changes))
	}
	if a := h.apply(); len(a.Changes) > 0 {
		t.Fatalf("second apply:\n%s", changeList(a.Changes))
	}
	if w := h.writesSince(mark); len(w) > 0 {
		t.Fatalf("second run wrote to vault: %q", w)
	}
	admin := h.client()
	tok := func(node string) string { return strings.TrimSpace(h.secret(ConsulTemplateTokenSecret(node))) }

	t.Run("each node has its own token, bound to its addresses", func(t *testing.T) {
		seen := map[string]bool{}
		for _, n := range testNodes(h.env.StateDir) {
			s := lookup(t, admin, tok(n.Name))
			if s == nil {
				t.Fatalf("%s: no live token", n.Name)
			}
			pols, _ := s.TokenPolicies()
			if str(s.Data, "role") != ConsulTemplateTokenRole(n.Name) || !slices.Contains(pols, ConsulTemplatePolicy(n)) ||
				!sameCIDRs(strs(s.Data, "bound_cidrs"), ConsulTemplateCIDRs(n)) || num(s.Data, "explicit_max_ttl") != 0 ||
				!boolean(s.Data, "renewable") || !boolean(s.Data, "orphan") {
				t.Errorf("%s's token: %v", n.Name, s.Data)
			}
			if seen[tok(n.Name)] {
				t.Errorf("%s shares a token", n.Name)
			}
			seen[tok(n.Name)] = true
			kv, err := admin.Logical().Read(KVPath(ConsulTemplateTokenSecret(n.Name)))
			if err != nil || kv == nil {
				t.Fatalf("kv copy of %s's token: %v", n.Name, err)
			}
			if data, _ := kv.Data["data"].(map[string]any); str(data, "value") != tok(n.Name) {
				t.Errorf("the kv copy of %s's token differs from the stored one", n.Name)
			}
		}
		// client-2 is elsewhere: its token is refused here, even for what
		// its policy allows.
		away := h.tokenClient(tok("client-2"))
		if _, err := issue(t, away, ConsulIntermediateMount, ConsulRole("client", dc), map[string]any{"common_name": "client." + dc + ".consul"}); !isDenied(err) {
			t.Errorf("client-2's token used from another address: %v", err)
		}
	})

	t.Run("tokens have only their kind's rights", func(t *testing.T) {
		client, server := h.tokenClient(tok("client-1")), h.tokenClient(tok("server-1"))
		for _, c := range []*api.Client{client, server} {
			if _, err := issue(t, c, ConsulIntermediateMount, ConsulRole("client", dc), map[string]any{"common_name": "client." + dc + ".consul"}); err != nil {
				t.Errorf("consul client cert: %v", err)
			}
			if _, err := issue(t, c, NomadIntermediateMount, NomadRole("client", region), map[string]any{"common_name": "client." + region + ".nomad"}); err != nil {
				t.Errorf("nomad client cert: %v", err)
			}
			denied := map[string]error{}
			_, denied["write policy"] = c.Logical().Write("sys/policies/acl/evil", map[string]any{"policy": `path "*" { capabilities = ["sudo"] }`})
			_, denied["read kv"] = c.Logical().Read(KVPath(ConsulTemplateTokenSecret("server-1")))
			_, denied["sign an intermediate"] = c.Logical().Write(ConsulRootMount+"/root/sign-intermediate", map[string]any{"csr": "x"})
			_, denied["list mounts"] = c.Sys().ListMounts()
			_, denied["create a token"] = c.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{PolicyAdmin}})
			_, denied["create a token from another node's role"] = c.Logical().Write("auth/token/create/"+ConsulTemplateTokenRole("client-2"), nil)
			for what, err := range denied {
				if !isDenied(err) {
					t.Errorf("%s: want permission denied, got %v", what, err)
				}
			}
		}
		for _, x := range []struct{ mount, role, cn string }{
			{ConsulIntermediateMount, ConsulRole("server", dc), "server." + dc + ".consul"},
			{NomadIntermediateMount, NomadRole("server", region), "server." + region + ".nomad"},
		} {
			if _, err := issue(t, client, x.mount, x.role, map[string]any{"common_name": x.cn}); !isDenied(err) {
				t.Errorf("client token issued from %s/%s: %v", x.mount, x.role, err)
			}
			if _, err := issue(t, server, x.mount, x.role, map[string]any{"common_name": x.cn}); err != nil {
				t.Errorf("server token cannot issue from %s/%s: %v", x.mount, x.role, err)
			}
		}
		// A client's own role does not name a server, whatever is asked.
		for _, x := range []struct {
			mount, role string
			data        map[string]any
		}{
			{ConsulIntermediateMount, ConsulRole("client", dc), map[string]any{"common_name": "server." + dc + ".consul"}},
			{ConsulIntermediateMount, ConsulRole("client", dc), map[string]any{"common_name": "client." + dc + ".consul", "alt_names": "server." + dc + ".consul"}},
			{NomadIntermediateMount, NomadRole("client", region), map[string]any{"common_name": "server." + region + ".nomad"}},
			{NomadIntermediateMount, NomadRole("client", region), map[string]any{"common_name": "client." + region + ".nomad", "alt_names": "server." + region + ".nomad"}},
		} {
			if _, err := issue(t, client, x.mount, x.role, x.data); err == nil {
				t.Errorf("the client role %s/%s issued %v", x.mount, x.role, x.data)
			}
		}
		// Periodic through its token role: consul-template keeps it alive
		// by renewing within a period.
		renewed, err := server.Auth().Token().RenewSelf(0)
		if err != nil {
			t.Fatalf("renew: %v", err)
		}
		if renewed.Auth.LeaseDuration != int(consulTemplatePeriod.Seconds()) {
			t.Errorf("renewed for %ds, want the period %s", renewed.Auth.LeaseDuration, consulTemplatePeriod)
		}
	})

	t.Run("a revoked token is replaced", func(t *testing.T) {
		old := tok("client-1")
		if err := admin.Auth().Token().RevokeOrphan(old); err != nil {
			t.Fatal(err)
		}
		role := ConsulTemplateTokenRole("client-1")
		want := []stages.Change{
			{Action: "create", Target: "vault token " + role, Detail: "node client-1: periodic 72h, bound to 127.0.0.1/32,127.0.1.4/32, policy " + PolicyConsulTemplateClient},
			{Action: "update", Target: "vault kv secret/bootstrap/" + ConsulTemplateTokenSecret("client-1")},
		}
		if p := h.plan(); !slices.Equal(p.Changes, want) {
			t.Fatalf("plan:\n%s", changeList(p.Changes))
		}
		if a := h.apply(); !slices.Equal(a.Changes, want) {
			t.Fatalf("apply:\n%s", changeList(a.Changes))
		}
		if tok("client-1") == old {
			t.Fatal("the revoked token was kept")
		}
		if _, err := issue(t, h.tokenClient(tok("client-1")), ConsulIntermediateMount, ConsulRole("client", dc), map[string]any{"common_name": "client." + dc + ".consul"}); err != nil {
			t.Fatalf("the new token: %v", err)
		}
		if p := h.plan(); len(p.Changes) > 0 {
			t.Fatalf("plan after apply:\n%s", changeList(p.Changes))
		}
	})

	t.Run("a node's new address gets a new token, the old one is revoked", func(t *testing.T) {
		nodes := testNodes(h.env.StateDir)
		nodes[1].PrivateIP = "127.0.1.9"
		setInventory(t, h.env, nodes)
		old := tok("client-1")
		role := ConsulTemplateTokenRole("client-1")
		want := []stages.Change{
			{Action: "update", Target: "vault token role auth/token/roles/" + role, Detail: "token_bound_cidrs [127.0.0.1,127.0.1.4] → [127.0.0.1/32,127.0.1.9/32]"},
			{Action: "create", Target: "vault token " + role, Detail: "node client-1: periodic 72h, bound to 127.0.0.1/32,127.0.1.9/32, policy " + PolicyConsulTemplateClient + "; replaces a token made for other addresses or rights"},
			{Action: "update", Target: "vault kv secret/bootstrap/" + ConsulTemplateTokenSecret("client-1")},
		}
		if p := h.plan(); !slices.Equal(p.Changes, want) {
			t.Fatalf("plan:\n%s", changeList(p.Changes))
		}
		h.apply()
		if lookup(t, admin, old) != nil {
			t.Error("the token bound to the old address still works")
		}
		if s := lookup(t, admin, tok("client-1")); s == nil || !sameCIDRs(strs(s.Data, "bound_cidrs"), []string{"127.0.0.1/32", "127.0.1.9/32"}) {
			t.Errorf("the new token: %v", s)
		}
		if p := h.plan(); len(p.Changes) > 0 {
			t.Fatalf("plan after apply:\n%s", changeList(p.Changes))
		}
	})

	t.Run("a node that leaves loses its token", func(t *testing.T) {
		nodes := testNodes(h.env.StateDir)
		nodes[1].PrivateIP = "127.0.1.9"
		setInventory(t, h.env, nodes[:2])
		old := tok("client-2")
		want := []stages.Change{{Action: "delete", Target: "vault token role auth/token/roles/" + ConsulTemplateTokenRole("client-2"), Detail: "node client-2 is no longer in the inventory; its token is revoked"}}
		if p := h.plan(); !slices.Equal(p.Changes, want) {
			t.Fatalf("plan:\n%s", changeList(p.Changes))
		}
		h.apply()
		if lookup(t, admin, old) != nil {
			t.Error("the token of the node that left still works")
		}
		if _, ok, _ := h.env.Secrets.Get(ConsulTemplateTokenSecret("client-2")); ok {
			t.Error("the token of the node that left is still stored")
		}
		if s, _ := admin.Logical().Read(KVPath(ConsulTemplateTokenSecret("client-2"))); s != nil {
			t.Error("its kv copy is still there")
		}
		if p := h.plan(); len(p.Changes) > 0 {
			t.Fatalf("plan after apply:\n%s", changeList(p.Changes))
		}
	})

	t.Run("the shared tokens of earlier versions are revoked", func(t *testing.T) {
		// What an earlier version left: a token role per kind and one token
		// each, shared by every node of the kind.
		var shared []string
		for _, x := range []struct{ policy, secret string }{
			{PolicyConsulTemplateServer, stages.SecretConsulTemplateServerToken},
			{PolicyConsulTemplateClient, stages.SecretConsulTemplateClientToken},
		} {
			if _, err := admin.Logical().Write("auth/token/roles/"+x.policy, map[string]any{
				"allowed_policies": []string{x.policy}, "orphan": true, "renewable": true, "token_period": int((24 * time.Hour).Seconds()),
			}); err != nil {
				t.Fatal(err)
			}
			s, err := admin.Logical().Write("auth/token/create/"+x.policy, map[string]any{"policies": []string{x.policy}})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.env.Secrets.Put(x.secret, s.Auth.ClientToken); err != nil {
				t.Fatal(err)
			}
			if err := StoreKV(context.Background(), admin, x.secret, s.Auth.ClientToken); err != nil {
				t.Fatal(err)
			}
			shared = append(shared, s.Auth.ClientToken)
		}
		want := []stages.Change{
			{Action: "revoke", Target: "vault token " + PolicyConsulTemplateServer, Detail: "shared by every server node; each node has its own now"},
			{Action: "delete", Target: "vault token role auth/token/roles/" + PolicyConsulTemplateServer, Detail: "the shared token's role"},
			{Action: "revoke", Target: "vault token " + PolicyConsulTemplateClient, Detail: "shared by every client node; each node has its own now"},
			{Action: "delete", Target: "vault token role auth/token/roles/" + PolicyConsulTemplateClient, Detail: "the shared token's role"},
		}
		if p := h.plan(); !slices.Equal(p.Changes, want) {
			t.Fatalf("plan:\n%s", changeList(p.Changes))
		}
		if a := h.apply(); !slices.Equal(a.Changes, want) {
			t.Fatalf("apply:\n%s", changeList(a.Changes))
		}
		for _, tok := range shared {
			if lookup(t, admin, tok) != nil {
				t.Error("a shared token still works")
			}
		}
		for _, name := range []string{stages.SecretConsulTemplateServerToken, stages.SecretConsulTemplateClientToken} {
			if _, ok, _ := h.env.Secrets.Get(name); ok {
				t.Errorf("%s is still stored", name)
			}
			if s, _ := admin.Logical().Read(KVPath(name)); s != nil {
				t.Errorf("the kv copy of %s is still there", name)
			}
		}
		if p := h.plan(); len(p.Changes) > 0 {
			t.Fatalf("plan after apply:\n%s", changeList(p.Changes))
		}
	})
}

// TestConsulTemplateWithNodeToken runs the real consul-template the way the
// consul_template role configures it (config.hcl.j2): a node's own token,
// the Vault CA and the name Vault's certificate must carry. The dev Vault's
// certificate names localhost, so that stands in for vault.service.consul.
func TestConsulTemplateWithNodeToken(t *testing.T) {
	ct := testcluster.Bin(t, "consul-template")
	h := newHarness(t, "")
	h.apply()
	dc := h.cfg.Datacenter
	run := func(t *testing.T, node, serverName string) (string, error) {
		t.Helper()
		dir := t.TempDir()
		q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
		out := filepath.Join(dir, "cert.pem")
		tpl := filepath.Join(dir, "cert.tpl")
		if err := os.WriteFile(tpl, []byte(`{{ with secret "`+IssuePath(ConsulIntermediateMount, ConsulRole("client", dc))+`" "common_name=client.`+dc+`.consul" "ttl=1h" }}{{ .Data.certificate }}{{ end }}`), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := `vault {
  address     = ` + q(h.vault.Addr) + `
  token       = ` + q(strings.TrimSpace(h.secret(ConsulTemplateTokenSecret(node)))) + `
  renew_token = true
  ssl {
    enabled     = true
    verify      = true
    ca_cert     = ` + q(h.vault.CACert) + `
    server_name = ` + q(serverName) + `
  }
  retry {
    attempts    = 2
    backoff     = "50ms"
    max_backoff = "100ms"
  }
}
template {
  source      = ` + q(tpl) + `
  destination = ` + q(out) + `
}
`
		file := filepath.Join(dir, "ct.hcl")
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		log, err := exec.CommandContext(ctx, ct, "-config="+file, "-once").CombinedOutput()
		if err != nil {
			return string(log), err
		}
		b, err := os.ReadFile(out)
		if err != nil {
			return string(log), err
		}
		return string(b), nil
	}
	if out, err := run(t, "client-1", "localhost"); err != nil || !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Errorf("client-1's token, Vault's name: %v\n%s", err, out)
	}
	if out, err := run(t, "client-1", "vault.example.com"); err == nil || !strings.Contains(out, "x509") {
		t.Errorf("a Vault certificate without the expected name was accepted: %v\n%s", err, out)
	}
	// client-2 is bound to its own addresses; from here its token is refused.
	if out, err := run(t, "client-2", "localhost"); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("client-2's token from another address: %v\n%s", err, out)
	}
}
