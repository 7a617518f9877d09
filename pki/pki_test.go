package pki

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/stages"
)

const mobileID = "testdata/mobileid.hcl"

// issue issues a leaf from mount/role and returns its PEM certificate.
func issue(t *testing.T, c *api.Client, mount, role string, data map[string]any) (string, error) {
	t.Helper()
	s, err := c.Logical().Write(IssuePath(mount, role), data)
	if err != nil {
		return "", err
	}
	return str(s.Data, "certificate"), nil
}

func caCert(t *testing.T, c *api.Client, mount string) string {
	t.Helper()
	s, err := c.Logical().Read(mount + "/cert/ca")
	if err != nil || s == nil {
		t.Fatalf("read %s/cert/ca: %v", mount, err)
	}
	return str(s.Data, "certificate")
}

func issuerCount(t testing.TB, c *api.Client, mount string) (issuers, withKey int) {
	t.Helper()
	s, err := c.Logical().List(mount + "/issuers")
	if err != nil || s == nil {
		t.Fatalf("list %s/issuers: %v", mount, err)
	}
	info, _ := s.Data["key_info"].(map[string]any)
	for _, id := range strs(s.Data, "keys") {
		issuers++
		if m, _ := info[id].(map[string]any); str(m, "key_id") != "" {
			withKey++
		}
	}
	return issuers, withKey
}

func keyCount(t testing.TB, c *api.Client, mount string) int {
	t.Helper()
	s, err := c.Logical().List(mount + "/keys")
	if err != nil || s == nil {
		t.Fatalf("list %s/keys: %v", mount, err)
	}
	return len(strs(s.Data, "keys"))
}

// TestApply sets up the MobileID PKI on a fresh Vault and checks everything a
// user relies on: leaves from every role verify against their chains, names
// stay within their roles, tokens and AppRoles have exactly their rights, a
// second run writes nothing, and the root token is gone but can be remade.
func TestApply(t *testing.T) {
	h := newHarness(t, mobileID)
	ctx := context.Background()
	// A production Vault has no KV engine; the dev server's goes, so the
	// stage has to mount one and write to it at once.
	if err := h.vault.Client.Sys().Unmount(KVMount); err != nil {
		t.Fatal(err)
	}

	mark := h.auditMark()
	plan := h.plan()
	if w := h.writesSince(mark); len(w) > 0 {
		t.Fatalf("plan wrote to vault: %q", w)
	}
	wantPlanned := []stages.Change{
		{Action: "create", Target: "vault mount consul/root-ca", Detail: "pki, max ttl 87600h"},
		{Action: "create", Target: "vault mount nomad/inter-ca", Detail: "pki, max ttl 43800h"},
		{Action: "create", Target: "vault auth jwt-nomad", Detail: "jwt"},
		{Action: "create", Target: "vault mount secret", Detail: "kv"},
		{Action: "create", Target: "vault user userpass/admin", Detail: "policy admin"},
	}
	for _, w := range wantPlanned {
		if !slices.Contains(plan.Changes, w) {
			t.Errorf("first plan lacks %v; plan:\n%s", w, changeList(plan.Changes))
		}
	}
	if len(plan.Warnings) > 0 {
		t.Errorf("warnings on a fresh vault: %q", plan.Warnings)
	}

	applied := h.apply()
	if !slices.Equal(applied.Changes, plan.Changes) {
		t.Errorf("apply did not do what plan said:\napplied:\n%s\nplanned:\n%s", changeList(applied.Changes), changeList(plan.Changes))
	}

	// Second run: nothing to do and not a single write, through the stage's
	// whole path: token lookup, plan and apply.
	mark = h.auditMark()
	if again := h.plan(); len(again.Changes) > 0 || len(again.Warnings) > 0 {
		t.Fatalf("plan after apply: changes:\n%s\nwarnings: %q", changeList(again.Changes), again.Warnings)
	}
	if again := h.apply(); len(again.Changes) > 0 {
		t.Fatalf("second apply changed:\n%s", changeList(again.Changes))
	}
	if w := h.writesSince(mark); len(w) > 0 {
		t.Fatalf("second run wrote to vault: %q", w)
	}

	admin := h.client()
	if admin.Token() != h.secret(stages.SecretVaultAdminToken) {
		t.Fatal("Token did not return the admin token after apply")
	}
	dir := t.TempDir()

	t.Run("leaves verify against their chains", func(t *testing.T) {
		type leaf struct {
			ca, inter, role string
			data            map[string]any
			purpose         string
		}
		dc, region := h.cfg.Datacenter, h.cfg.Region
		agent := func(name string) map[string]any {
			return map[string]any{"common_name": name, "alt_names": "localhost", "ip_sans": "127.0.0.1,127.0.1.7"}
		}
		leaves := []leaf{
			{"consul", "ca", ConsulRole("server", dc), agent("server." + dc + ".consul"), "sslserver"},
			{"consul", "ca", ConsulRole("client", dc), agent("client." + dc + ".consul"), "sslclient"},
			{"nomad", "ca", NomadRole("server", region), agent("server." + region + ".nomad"), "sslserver"},
			{"nomad", "ca", NomadRole("client", region), agent("client." + region + ".nomad"), "sslclient"},
			{"mdl-reader", "org-utopia-police", "utopia-police-reader", map[string]any{"common_name": "Utopia Police Reader 7"}, ""},
			{"mdl-reader", "org-utopia-bank", "utopia-bank-reader", map[string]any{"common_name": "Utopia Bank Reader 1"}, ""},
			{"mdl-iaca", "", "document-signer", map[string]any{"common_name": "Utopia DS"}, ""},
			{"mdl-iaca", "", "jws-signer", map[string]any{"common_name": "Utopia JWS"}, ""},
			{"mdl-iaca", "", "ocsp-signer", map[string]any{"common_name": "Utopia OCSP"}, ""},
			{"mdl-iaca", "", "association", map[string]any{"common_name": "app.association.mobileid.example"}, "sslserver"},
		}
		for _, l := range leaves {
			rootMount := l.ca + "/root-ca"
			mount := rootMount
			if l.inter != "" {
				mount = l.ca + "/inter-" + l.inter
			}
			cert, err := issue(t, admin, mount, l.role, l.data)
			if err != nil {
				t.Errorf("issue from %s/%s: %v", mount, l.role, err)
				continue
			}
			leafFile := writePEM(t, dir, l.role+".pem", cert)
			rootFile := writePEM(t, dir, l.ca+"-root.pem", caCert(t, admin, rootMount))
			args := []string{"-CAfile", rootFile}
			if l.inter != "" {
				args = append(args, "-untrusted", writePEM(t, dir, l.inter+"-inter.pem", caCert(t, admin, mount)))
			}
			if l.purpose != "" {
				args = append(args, "-purpose", l.purpose)
			}
			opensslVerify(t, append(args, leafFile)...)
			if l.inter != "" {
				// The leaf must not verify against the root alone.
				out, err := exec.Command("openssl", "verify", "-CAfile", rootFile, leafFile).CombinedOutput()
				if err == nil {
					t.Errorf("leaf of %s verified without its intermediate: %s", mount, out)
				}
			}
		}
		// The CA files the later stages hand to agents and users.
		for _, name := range []string{"consul", "nomad"} {
			key := map[string]string{"consul": stages.OutConsulCACert, "nomad": stages.OutNomadCACert}[name]
			file := h.env.State.Output(key)
			if file != h.env.CAFile(name) {
				t.Errorf("output %s = %q", key, file)
			}
			opensslVerify(t, "-CAfile", file, dir+"/"+map[string]string{"consul": ConsulRole("server", dc), "nomad": NomadRole("server", region)}[name]+".pem")
		}
	})

	t.Run("a consul role cannot issue a nomad name", func(t *testing.T) {
		dc := h.cfg.Datacenter
		for _, name := range []string{"server.global.nomad", "client." + dc + ".consul", "evil.server." + dc + ".consul", "*.server." + dc + ".consul", "example.com"} {
			if _, err := issue(t, admin, ConsulIntermediateMount, ConsulRole("server", dc), map[string]any{"common_name": name}); err == nil {
				t.Errorf("consul server role issued %q", name)
			}
		}
		if _, err := issue(t, admin, ConsulIntermediateMount, ConsulRole("server", dc), map[string]any{"common_name": "server." + dc + ".consul", "alt_names": "server.global.nomad"}); err == nil {
			t.Error("consul server role issued a nomad name as SAN")
		}
	})

	// The consul-template tokens: TestConsulTemplateTokens.

	t.Run("the approle issues only from its roles", func(t *testing.T) {
		roleID := h.env.State.Output(stages.OutVaultAppRolePrefix + "django-backend_role_id")
		if roleID == "" {
			t.Fatal("no role id output")
		}
		anon := h.tokenClient("")
		s, err := anon.Logical().Write("auth/approle/login", map[string]any{
			"role_id":   roleID,
			"secret_id": h.secret(stages.SecretVaultAppRolePrefix + "django-backend/secret-id"),
		})
		if err != nil {
			t.Fatalf("approle login: %v", err)
		}
		if s.Auth.LeaseDuration != 3600 {
			t.Errorf("approle token ttl = %ds, configured 1h", s.Auth.LeaseDuration)
		}
		app := h.tokenClient(s.Auth.ClientToken)
		if _, err := issue(t, app, "mdl-iaca/root-ca", "document-signer", map[string]any{"common_name": "Utopia DS"}); err != nil {
			t.Errorf("document signer: %v", err)
		}
		if _, err := issue(t, app, "mdl-reader/inter-org-utopia-bank", "utopia-bank-reader", map[string]any{"common_name": "Bank Reader 9"}); err != nil {
			t.Errorf("bank reader: %v", err)
		}
		// A role of the same name on another of the CA's mounts is not its.
		if _, err := issue(t, app, "mdl-reader/inter-org-utopia-police", "utopia-bank-reader", map[string]any{"common_name": "x"}); !isDenied(err) {
			t.Errorf("issue through another mount: want denied, got %v", err)
		}
		if _, err := issue(t, app, ConsulIntermediateMount, ConsulRole("client", h.cfg.Datacenter), map[string]any{"common_name": "client.dc1.consul"}); !isDenied(err) {
			t.Errorf("approle issued a consul certificate: %v", err)
		}
		if _, err := app.Logical().Write("mdl-iaca/root-ca/roles/document-signer", map[string]any{"ttl": "87600h"}); !isDenied(err) {
			t.Errorf("approle changed a role: %v", err)
		}
	})

	t.Run("the admin can do what the later stages need", func(t *testing.T) {
		for path, want := range map[string]string{
			"sys/storage/raft/configuration":                 "read", // vault stage: raft peers
			"sys/storage/raft/autopilot/state":               "read", // vault stage: rolling restarts
			"sys/step-down":                                  "sudo",
			"sys/mounts/newapp/root-ca":                      "create", // more engines
			"sys/auth/oidc":                                  "sudo",   // more auth methods
			"auth/" + JWTNomadPath + "/config":               "update", // nomad stage: workload identity
			"auth/" + JWTNomadPath + "/role/nomad-workloads": "create",
			"sys/policies/acl/anything":                      "update",
			"auth/token/create":                              "update",
			"identity/entity/name/x":                         "update",
			KVMount + "/data/bootstrap/consul/x":             "update", // StoreKV of other stages
			ConsulRootMount + "/root/sign-intermediate":      "update",
		} {
			caps, err := admin.Sys().CapabilitiesSelf(path)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(caps, want) {
				t.Errorf("admin on %s: %q, want %s", path, caps, want)
			}
		}
	})

	t.Run("a destroyed secret id is replaced, never registered again", func(t *testing.T) {
		secretName := stages.SecretVaultAppRolePrefix + "django-backend/secret-id"
		old := h.secret(secretName)
		if _, err := admin.Logical().Write("auth/approle/role/django-backend/secret-id-accessor/destroy", map[string]any{
			"secret_id_accessor": h.env.Note("vault_approle_django-backend_secret_id_accessor"),
		}); err != nil {
			t.Fatal(err)
		}
		want := []stages.Change{
			{Action: "create", Target: "vault approle django-backend secret id"},
			{Action: "update", Target: "vault kv secret/bootstrap/" + secretName},
		}
		if p := h.plan(); !slices.Equal(p.Changes, want) {
			t.Fatalf("plan:\n%s", changeList(p.Changes))
		}
		if a := h.apply(); !slices.Equal(a.Changes, want) {
			t.Fatalf("apply:\n%s", changeList(a.Changes))
		}
		login := func(id string) error {
			_, err := h.tokenClient("").Logical().Write("auth/approle/login", map[string]any{
				"role_id":   h.env.State.Output(stages.OutVaultAppRolePrefix + "django-backend_role_id"),
				"secret_id": id,
			})
			return err
		}
		if err := login(old); err == nil {
			t.Error("the destroyed secret id works again")
		}
		if err := login(h.secret(secretName)); err != nil {
			t.Errorf("the new secret id: %v", err)
		}
		if p := h.plan(); len(p.Changes) > 0 {
			t.Fatalf("plan after apply:\n%s", changeList(p.Changes))
		}
	})

	t.Run("StoreKV writes only differences", func(t *testing.T) {
		writes := func(value string) []string {
			mark := h.auditMark()
			if err := StoreKV(ctx, admin, "test/token", value); err != nil {
				t.Fatal(err)
			}
			return h.writesSince(mark)
		}
		if w := writes("one"); !slices.Equal(w, []string{"create " + KVPath("test/token")}) {
			t.Errorf("first store: %q", w)
		}
		if w := writes("one"); len(w) > 0 {
			t.Errorf("same value again: %q", w)
		}
		if w := writes("two"); !slices.Equal(w, []string{"update " + KVPath("test/token")}) {
			t.Errorf("changed value: %q", w)
		}
		if differs, err := KVDiffers(ctx, admin, "test/token", "two"); err != nil || differs {
			t.Errorf("KVDiffers after store: %v %v", differs, err)
		}
	})

	t.Run("nomad workloads read only their own secrets", func(t *testing.T) {
		checkNomadWorkloads(t, h, admin)
	})

	t.Run("the root token is revoked and can be regenerated", func(t *testing.T) {
		if h.env.Note(noteRootTokenRevoked) != "true" {
			t.Fatal("revocation not recorded")
		}
		if _, err := h.tokenClient(h.vault.Token).Auth().Token().LookupSelf(); !isDenied(err) {
			t.Fatalf("the root token still works: %v", err)
		}
		key := unsealKey(t, h.vault.Proc.LogPath)
		// An attempt left by an interrupted earlier call is replaced.
		if _, err := h.tokenClient("").Sys().GenerateRootInit("", ""); err != nil {
			t.Fatal(err)
		}
		tok, err := RegenerateRoot(ctx, h.tokenClient(""), []string{key})
		if err != nil {
			t.Fatal(err)
		}
		s, err := h.tokenClient(tok).Auth().Token().LookupSelf()
		if err != nil {
			t.Fatalf("regenerated root token: %v", err)
		}
		if pols, _ := s.TokenPolicies(); !slices.Equal(pols, []string{"root"}) {
			t.Fatalf("regenerated token policies %q", pols)
		}
		if _, err := RegenerateRoot(ctx, h.tokenClient(""), []string{"AAAA" + key[4:]}); err == nil {
			t.Error("a wrong unseal key made a root token")
		}
		// Put where an operator would put it, the next run revokes it again.
		if err := h.env.Secrets.Put(stages.SecretVaultRootToken, tok); err != nil {
			t.Fatal(err)
		}
		if p := h.plan(); !slices.ContainsFunc(p.Changes, func(c stages.Change) bool { return c.Target == "vault root token" }) {
			t.Fatalf("plan does not revoke the restored root token:\n%s", changeList(p.Changes))
		}
		h.apply()
		if _, err := h.tokenClient(tok).Auth().Token().LookupSelf(); !isDenied(err) {
			t.Fatalf("the restored root token still works: %v", err)
		}
	})

	t.Run("an expired admin token is replaced by logging in", func(t *testing.T) {
		old := h.secret(stages.SecretVaultAdminToken)
		if err := h.tokenClient(old).Auth().Token().RevokeSelf(""); err != nil {
			t.Fatal(err)
		}
		c := h.client()
		if c.Token() == old || c.Token() == "" {
			t.Fatal("Token returned the revoked admin token")
		}
		if h.secret(stages.SecretVaultAdminToken) != c.Token() {
			t.Fatal("the new admin token was not stored")
		}
		if p := h.plan(); len(p.Changes) > 0 {
			t.Fatalf("plan after re-login:\n%s", changeList(p.Changes))
		}
	})
}

func changeList(cs []stages.Change) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString("  " + c.String() + "\n")
	}
	return b.String()
}

// unseal reads the dev server's single unseal key from its log.
func unsealKey(t *testing.T, log string) string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, ok := strings.CutPrefix(strings.TrimSpace(line), "Unseal Key: "); ok {
			return k
		}
	}
	t.Fatal("no unseal key in the dev server's log")
	return ""
}
