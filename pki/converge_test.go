package pki

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// TestOneTTLChange changes one role's TTL: exactly that role is planned,
// updated and written, and nothing else.
func TestOneTTLChange(t *testing.T) {
	h := newHarness(t, mobileID)
	h.apply()

	role := findRole(t, h.cfg, "mdl-iaca", "document-signer")
	role.TTL = "4380h"
	want := stages.Change{Action: "update", Target: "vault role mdl-iaca/root-ca/roles/document-signer", Detail: "max_ttl 8760h → 4380h, ttl 8760h → 4380h"}
	plan := h.plan()
	if !slices.Equal(plan.Changes, []stages.Change{want}) {
		t.Fatalf("plan after changing one ttl:\n%s", changeList(plan.Changes))
	}
	mark := h.auditMark()
	applied := h.apply()
	if !slices.Equal(applied.Changes, []stages.Change{want}) {
		t.Fatalf("apply after changing one ttl:\n%s", changeList(applied.Changes))
	}
	if w := h.writesSince(mark); !slices.Equal(w, []string{"update mdl-iaca/root-ca/roles/document-signer"}) {
		t.Fatalf("writes: %q", w)
	}
	s, err := h.client().Logical().Read("mdl-iaca/root-ca/roles/document-signer")
	if err != nil || num(s.Data, "ttl") != int64((4380*time.Hour).Seconds()) {
		t.Fatalf("role after apply: %v %v", s, err)
	}
	if p := h.plan(); len(p.Changes) > 0 {
		t.Fatalf("plan after apply:\n%s", changeList(p.Changes))
	}

	// The platform's leaf TTL touches the four agent roles and nothing else.
	h.cfg.PKI.LeafTTL = "48h"
	var targets []string
	for _, c := range h.apply().Changes {
		targets = append(targets, c.Target)
	}
	dc, region := h.cfg.Datacenter, h.cfg.Region
	wantTargets := []string{
		"vault role consul/inter-ca/roles/" + ConsulRole("server", dc),
		"vault role consul/inter-ca/roles/" + ConsulRole("client", dc),
		"vault role nomad/inter-ca/roles/" + NomadRole("server", region),
		"vault role nomad/inter-ca/roles/" + NomadRole("client", region),
	}
	if !slices.Equal(targets, wantTargets) {
		t.Fatalf("changing leaf_ttl changed %q", targets)
	}

	// A CA that differs from the configuration is reported, never replaced.
	findCA(t, h.cfg, "mdl-iaca").CommonName = "Another Issuing Authority"
	plan = h.plan()
	if len(plan.Changes) > 0 {
		t.Fatalf("a changed CA common name planned:\n%s", changeList(plan.Changes))
	}
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], "mdl-iaca/root-ca") || !strings.Contains(plan.Warnings[0], "never replaces") {
		t.Fatalf("warnings: %q", plan.Warnings)
	}
	mark = h.auditMark()
	if res := h.apply(); len(res.Changes) > 0 || len(res.Warnings) != 1 {
		t.Fatalf("apply with a changed CA: %v", res)
	}
	if w := h.writesSince(mark); len(w) > 0 {
		t.Fatalf("a changed CA common name wrote %q", w)
	}
	if n, _ := issuerCount(t, h.client(), "mdl-iaca/root-ca"); n != 1 {
		t.Fatalf("mdl-iaca/root-ca has %d issuers", n)
	}
}

func findCA(t *testing.T, cfg *config.Platform, name string) *config.CA {
	t.Helper()
	for i := range cfg.PKI.CAs {
		if cfg.PKI.CAs[i].Name == name {
			return &cfg.PKI.CAs[i]
		}
	}
	t.Fatalf("no ca %q", name)
	return nil
}

func findRole(t *testing.T, cfg *config.Platform, ca, name string) *config.Role {
	t.Helper()
	c := findCA(t, cfg, ca)
	for i := range c.Roles {
		if c.Roles[i].Name == name {
			return &c.Roles[i]
		}
	}
	t.Fatalf("no role %q in ca %q", name, ca)
	return nil
}

// The child process of the kill tests: an Apply against the harness's state
// directory, as the stage runs it. It is killed by a crash point or by the
// parent.
const (
	childStateEnv  = "PKI_TEST_CHILD_STATE"
	childConfigEnv = "PKI_TEST_CHILD_CONFIG"
)

func TestChildApply(t *testing.T) {
	dir := os.Getenv(childStateEnv)
	if dir == "" {
		t.Skip("the child of the kill tests")
	}
	env := openEnv(t, dir, loadConfig(t, os.Getenv(childConfigEnv)))
	c, err := NewClient(env.State.Output(stages.OutVaultAddr), env.State.Output(stages.OutVaultCACert))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tok, err := Token(ctx, env, c)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok)
	spec, err := FromConfig(env.Config, env.State.Output(stages.OutVaultAddr))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(ctx, c, env, spec); err != nil {
		t.Fatal(err)
	}
}

func openEnv(t testing.TB, dir string, cfg *config.Platform) *stages.Env {
	t.Helper()
	store, err := secrets.Open(filepath.Join(dir, "secrets"), secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	state, err := statedir.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return stages.NewEnv(cfg, dir, store, state, nil, nil)
}

// child starts an Apply in a child process.
func (h *harness) child(crashPoint string) *exec.Cmd {
	h.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildApply$", "-test.count=1")
	cfgFile, _ := filepath.Abs(mobileID)
	cmd.Env = append(os.Environ(), childStateEnv+"="+h.env.StateDir, childConfigEnv+"="+cfgFile, crashpoint.Env+"="+crashPoint)
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	return cmd
}

// killed reports whether the child died of SIGKILL; a child that failed
// fails the test.
func killed(t *testing.T, cmd *exec.Cmd, err error) bool {
	t.Helper()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
		t.Fatalf("child apply failed: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}

// reload reads the state the children left, as the next run would.
func (h *harness) reload() {
	h.t.Helper()
	h.env = openEnv(h.t, h.env.StateDir, h.cfg)
}

// converged checks a finished PKI: nothing left to do, exactly one root per
// root mount, exactly one key and one signed intermediate per intermediate
// mount, and identities that work.
func (h *harness) converged() {
	h.t.Helper()
	if p := h.plan(); len(p.Changes) > 0 || len(p.Warnings) > 0 {
		h.t.Fatalf("not converged:\n%s\nwarnings: %q", changeList(p.Changes), p.Warnings)
	}
	c := h.client()
	for _, ca := range h.spec().AllCAs() {
		if n, k := issuerCount(h.t, c, ca.RootMount()); n != 1 || k != 1 {
			h.t.Errorf("%s: %d issuers, %d with a key; want exactly one root", ca.RootMount(), n, k)
		}
		if k := keyCount(h.t, c, ca.RootMount()); k != 1 {
			h.t.Errorf("%s: %d keys", ca.RootMount(), k)
		}
		for _, in := range ca.Intermediates {
			m := ca.IntermediateMount(in.Name)
			if _, k := issuerCount(h.t, c, m); k != 1 {
				h.t.Errorf("%s: %d signed intermediates", m, k)
			}
			if k := keyCount(h.t, c, m); k != 1 {
				h.t.Errorf("%s: %d keys", m, k)
			}
		}
	}
	anon := h.tokenClient("")
	if _, err := anon.Logical().Write("auth/approle/login", map[string]any{
		"role_id":   h.env.State.Output(stages.OutVaultAppRolePrefix + "django-backend_role_id"),
		"secret_id": h.secret(stages.SecretVaultAppRolePrefix + "django-backend/secret-id"),
	}); err != nil {
		h.t.Errorf("approle login with the stored secret id: %v", err)
	}
	// Each node's token, looked up by the admin: a node's token is bound
	// to the node's addresses.
	for _, n := range testNodes(h.env.StateDir) {
		name := ConsulTemplateTokenSecret(n.Name)
		if _, err := c.Logical().ReadWithData("auth/token/lookup", map[string][]string{"token": {h.secret(name)}}); err != nil {
			h.t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := h.tokenClient(h.vault.Token).Auth().Token().LookupSelf(); !isDenied(err) {
		h.t.Errorf("root token not revoked: %v", err)
	}
	if h.env.Note(noteRootTokenRevoked) != "true" {
		h.t.Error("root token revocation not recorded")
	}
}

// TestKilledAtCrashPoints kills an Apply (SIGKILL, in a child process) at
// each point where a half-done step is most delicate — between creating an
// intermediate's key and importing its certificate, between creating a
// token and storing it — and checks that the next run finishes the work
// without a second CA.
func TestKilledAtCrashPoints(t *testing.T) {
	h := newHarness(t, mobileID)
	points := []string{
		"pki/root-generated",       // consul's root
		"pki/intermediate-csr",     // consul's intermediate: key made, not signed
		"pki/intermediate-signed",  // the same key reused, signed, not imported
		"pki/root-generated",       // nomad's root
		"pki/intermediate-signed",  // nomad's intermediate
		"pki/token-created",        // a consul-template token Vault knows, the store does not
		"pki/secret-id-stored",     // a secret id the store knows, Vault does not
		"pki/secret-id-registered", // Vault knows it, the state has no accessor
		"pki/admin-created",        // admin user without a token
		"pki/root-revoked",         // revoked, not recorded
	}
	for _, p := range points {
		cmd := h.child(p)
		if !killed(t, cmd, cmd.Wait()) {
			t.Fatalf("crash point %s was never reached", p)
		}
	}
	h.reload()
	h.apply()
	h.converged()
}

// TestKilledAtRandom kills Apply (SIGKILL, in a child process) at random
// moments until a run gets to finish on its own, then checks the PKI
// converged with exactly one root per mount.
func TestKilledAtRandom(t *testing.T) {
	h := newHarness(t, mobileID)
	rnd := newRand(t)
	kills := 0
	for ; kills < 40; kills++ {
		cmd := h.child("")
		// The window grows so that a run finishes eventually, however busy
		// the machine; the early kills land inside the work.
		time.Sleep(time.Duration(rnd.IntN(200+25*kills)) * time.Millisecond)
		_ = cmd.Process.Kill()
		if !killed(t, cmd, cmd.Wait()) {
			break
		}
	}
	t.Logf("%d runs killed before one finished", kills)
	h.reload()
	h.apply()
	h.converged()
}

// TestCancelledAtRandom cancels Apply's context at random moments until a
// run finishes, then checks the PKI converged.
func TestCancelledAtRandom(t *testing.T) {
	h := newHarness(t, mobileID)
	rnd := newRand(t)
	cancelled := 0
	for ; cancelled < 100; cancelled++ {
		window := time.Duration(150+10*cancelled) * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rnd.Int64N(int64(window))))
		c, err := NewClient(h.vault.Addr, h.vault.CACert)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := Token(ctx, h.env, c)
		if err == nil {
			c.SetToken(tok)
			_, err = Apply(ctx, c, h.env, h.spec())
		}
		cancel()
		if err == nil {
			break
		}
		if os.Getenv("PKI_DEBUG") != "" {
			t.Logf("run %d: %v", cancelled, err)
		}
		if ctx.Err() == nil {
			t.Fatalf("apply failed without being cancelled: %v", err)
		}
	}
	t.Logf("%d runs cancelled before one finished", cancelled)
	h.apply()
	h.converged()
}

func newRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed))
}
