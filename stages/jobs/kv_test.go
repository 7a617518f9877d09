package jobs

import (
	"context"
	"slices"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
)

// TestKVSecrets runs the jobs' KV secrets against a real Vault: a new or
// changed secret is written, a converged one is left alone, and one no
// job reads any more (an ingress certificate whose tls block is gone) is
// deleted, every version of it.
func TestKVSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Vault")
	}
	v := testcluster.StartVault(t)
	ctx := context.Background()
	const path = "general/fabio/tls-prod"
	run := func(p *platform, apply bool) []string {
		t.Helper()
		pl := &reconcile.Plan{Apply: apply}
		if err := convergeKV(ctx, p, pl); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range pl.Changes {
			out = append(out, c.String())
		}
		return out
	}
	with := &platform{vault: v.Client, kv: map[string]map[string]string{path: {"cert": "C1", "key": "K1"}}}
	written := []string{"update vault kv secret/" + path + " (a platform job's secret)"}
	if got := run(with, true); !slices.Equal(got, written) {
		t.Fatalf("first run: %q, want %q", got, written)
	}
	if got := run(with, false); len(got) != 0 {
		t.Errorf("converged: %q, want no change", got)
	}
	with.kv[path]["cert"] = "C2" // a renewed certificate
	if got := run(with, true); !slices.Equal(got, written) {
		t.Errorf("renewed: %q, want %q", got, written)
	}
	s, err := v.Client.Logical().Read("secret/data/" + path)
	if err != nil || s == nil || s.Data["data"].(map[string]any)["cert"] != "C2" {
		t.Fatalf("after the renewal: %v, %v", s, err)
	}

	// Fabio's other secrets beside it are no ingress certificates.
	const token = "general/fabio/consul"
	if _, err := v.Client.Logical().Write("secret/data/"+token, map[string]any{"data": map[string]any{"token": "T"}}); err != nil {
		t.Fatal(err)
	}
	without := &platform{vault: v.Client, kv: map[string]map[string]string{token: {"token": "T"}}}
	deleted := []string{"delete vault kv secret/" + path + " (no job reads it any more)"}
	if got := run(without, false); !slices.Equal(got, deleted) {
		t.Errorf("plan without tls: %q, want %q", got, deleted)
	}
	if s, err := v.Client.Logical().Read("secret/metadata/" + path); err != nil || s == nil {
		t.Fatalf("the plan deleted the secret: %v, %v", s, err)
	}
	if got := run(without, true); !slices.Equal(got, deleted) {
		t.Errorf("apply without tls: %q, want %q", got, deleted)
	}
	if s, err := v.Client.Logical().Read("secret/metadata/" + path); err != nil || s != nil {
		t.Errorf("secret/%s after the delete: %v, %v; want no versions left", path, s, err)
	}
	if got := run(without, false); len(got) != 0 {
		t.Errorf("converged without tls: %q, want no change", got)
	}
	if s, err := v.Client.Logical().Read("secret/data/" + token); err != nil || s == nil {
		t.Errorf("secret/%s after the delete: %v, %v; want it kept", token, s, err)
	}
}
