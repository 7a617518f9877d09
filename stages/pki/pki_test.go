package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	vaultpki "github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/stagestest"
)

type events struct {
	mu  sync.Mutex
	all []stages.Event
}

func (e *events) Event(ev stages.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func newEnv(t *testing.T, rep stages.Reporter) *stages.Env {
	t.Helper()
	return stagestest.Env(t, ".", t.TempDir(), `provider "local" {}`, rep)
}

// withVault starts a real Vault and gives an environment in which the vault
// stage has run: its address, CA and root token recorded.
func withVault(t *testing.T, rep stages.Reporter) (*testcluster.Vault, *stages.Env) {
	t.Helper()
	v := testcluster.StartVault(t)
	env := newEnv(t, rep)
	if err := env.Secrets.Put(stages.SecretVaultRootToken, v.Token); err != nil {
		t.Fatal(err)
	}
	if err := env.State.SetOutput(stages.OutVaultAddr, v.Addr); err != nil {
		t.Fatal(err)
	}
	if err := env.State.SetOutput(stages.OutVaultCACert, v.CACert); err != nil {
		t.Fatal(err)
	}
	return v, env
}

func TestNotReadyWithoutVault(t *testing.T) {
	env := newEnv(t, nil)
	_, err := New().Plan(context.Background(), env)
	if !errors.Is(err, stages.ErrNotReady) {
		t.Fatalf("plan without the vault stage's outputs: %v", err)
	}
}

// TestUpTwice runs the stage through the runner against a real Vault, as
// `bootstrap up` does: the first run changes, the second finds nothing to
// do, and no secret ever reaches the output.
func TestUpTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Vault")
	}
	rep := &events{}
	v, env := withVault(t, rep)
	r := &stages.Runner{Stages: []stages.Stage{New()}, Env: env}
	ctx := context.Background()

	res, err := r.Up(ctx, stages.Selection{})
	if err != nil {
		t.Fatalf("first up: %v", err)
	}
	if res[0].Outcome != statedir.OutcomeChanged || len(res[0].Changes) == 0 {
		t.Fatalf("first up: %+v", res[0])
	}
	res, err = r.Up(ctx, stages.Selection{})
	if err != nil {
		t.Fatalf("second up: %v", err)
	}
	if res[0].Outcome != statedir.OutcomeUnchanged {
		t.Fatalf("second up: %s with changes %v", res[0].Outcome, res[0].Changes)
	}

	// What later stages rely on.
	for _, key := range []string{stages.OutConsulCACert, stages.OutNomadCACert} {
		file := env.State.Output(key)
		if b, err := os.ReadFile(file); err != nil || strings.Count(string(b), "BEGIN CERTIFICATE") != 2 {
			t.Errorf("%s = %q: want root and intermediate (%v)", key, file, err)
		}
	}
	c, err := vaultpki.NewClient(v.Addr, v.CACert)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := vaultpki.Token(ctx, env, c)
	if err != nil {
		t.Fatal(err)
	}
	if admin, _, _ := env.Secrets.Get(stages.SecretVaultAdminToken); tok != admin || tok == v.Token {
		t.Fatal("Token does not return the admin token after the stage")
	}

	values, err := env.Secrets.Values()
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(rep.all)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range values {
		if len(s) >= 8 && strings.Contains(string(out), s) {
			t.Errorf("a secret of the store appears in the run's events")
		}
	}
}

// TestRotateCA rotates the platform intermediate CAs on a real Vault: the
// stage makes a new intermediate under the same root and makes it the
// default, the CA file follows it, a second run changes nothing, and
// retiring the old one revokes it at the root and deletes it with its key.
func TestRotateCA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Vault")
	}
	v, env := withVault(t, nil)
	r := &stages.Runner{Stages: []stages.Stage{New()}, Env: env}
	ctx := context.Background()
	up := func(want statedir.Outcome) {
		t.Helper()
		res, err := r.Up(ctx, stages.Selection{})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Outcome != want {
			t.Fatalf("up: %s, want %s (changes %v)", res[0].Outcome, want, res[0].Changes)
		}
	}
	up(statedir.OutcomeChanged)
	c, err := vaultpki.NewClient(v.Addr, v.CACert)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := vaultpki.Token(ctx, env, c)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok)
	before, err := vaultpki.PlatformIntermediate(ctx, c, "consul")
	if err != nil {
		t.Fatal(err)
	}
	caFile, _ := os.ReadFile(env.CAFile("consul"))

	if err := stages.RequestCARotation(env.State, []string{"consul"}); err != nil {
		t.Fatal(err)
	}
	up(statedir.OutcomeChanged)
	up(statedir.OutcomeUnchanged)
	after, err := vaultpki.PlatformIntermediate(ctx, c, "consul")
	if err != nil {
		t.Fatal(err)
	}
	if after.Current.Equal(before.Current) {
		t.Fatal("the default issuer is the old intermediate after the rotation")
	}
	if len(after.Old) != 1 {
		t.Fatalf("%d old issuers after the rotation, want 1: %v", len(after.Old), after.Old)
	}
	if after.Current.Subject.CommonName != before.Current.Subject.CommonName || !bytes.Equal(after.Current.RawIssuer, before.Current.RawIssuer) {
		t.Errorf("the new intermediate is %s by %s, want %s by %s", after.Current.Subject, after.Current.Issuer, before.Current.Subject, before.Current.Issuer)
	}
	if now, _ := os.ReadFile(env.CAFile("consul")); bytes.Equal(now, caFile) || !bytes.Contains(now, pemOf(after.Current)) {
		t.Error("the consul CA file does not hold the new intermediate")
	}
	// Issued from the new one.
	s, err := c.Logical().Write("consul/inter-ca/issue/client-dc1", map[string]any{"common_name": "client.dc1.consul"})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(s.Data["certificate"].(string)))
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(after.Current); err != nil {
		t.Errorf("a certificate issued after the rotation is not the new CA's: %v", err)
	}
	if other, err := vaultpki.PlatformIntermediate(ctx, c, "nomad"); err != nil || len(other.Old) != 0 {
		t.Errorf("nomad's CA was rotated too: %v, %v", other.Old, err)
	}

	for _, o := range after.Old {
		if err := after.Retire(ctx, c, o); err != nil {
			t.Fatal(err)
		}
		// Retiring again is a no-op: a killed run does it again.
		if err := after.Retire(ctx, c, o); err != nil {
			t.Fatalf("retire again: %v", err)
		}
	}
	retired, err := vaultpki.PlatformIntermediate(ctx, c, "consul")
	if err != nil || len(retired.Old) != 0 {
		t.Fatalf("after retiring: %v, %v", retired.Old, err)
	}
	rev, err := c.Logical().Read("consul/root-ca/cert/" + vaultpki.Serial(before.Current))
	if err != nil || rev == nil {
		t.Fatalf("read the old intermediate at the root: %v", err)
	}
	if n, _ := rev.Data["revocation_time"].(json.Number).Int64(); n == 0 {
		t.Error("the old intermediate is not revoked at the root")
	}
	up(statedir.OutcomeUnchanged)
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
