package pki

import (
	"context"
	"encoding/json"
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
	v := testcluster.StartVault(t)
	rep := &events{}
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
