package stages_test

import (
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

func TestRequestTokenRotation(t *testing.T) {
	st, err := statedir.Load(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Platform{Nomad: config.Nomad{Namespaces: []string{"dev", "prod"}}}
	// A rotation under way keeps its note (the old token's accessor).
	if err := st.SetNote("nomad", stages.RotateTokenNote("ci-dev"), "accessor-1"); err != nil {
		t.Fatal(err)
	}
	toks, err := stages.RequestTokenRotation(st, cfg, []string{"ci"})
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) != 2 || toks[0].Name != "ci-dev" || toks[1].Name != "ci-prod" {
		t.Errorf("ci tokens: %v", toks)
	}
	for name, want := range map[string]string{"ci-dev": "accessor-1", "ci-prod": stages.RotateRequested, "management": "", "ui-read": ""} {
		if got := st.Note("nomad", stages.RotateTokenNote(name)); got != want {
			t.Errorf("nomad note for %s = %q, want %q", name, got, want)
		}
	}
	if toks, err = stages.RequestTokenRotation(st, cfg, nil); err != nil || len(toks) != 8 {
		t.Errorf("every token: %d, %v", len(toks), err)
	}
	if got := st.Note("consul", stages.RotateTokenNote("management")); got != stages.RotateRequested {
		t.Errorf("consul management note = %q", got)
	}
	if _, err := stages.RequestTokenRotation(st, cfg, []string{"root"}); err == nil {
		t.Error("an unknown kind was accepted")
	}
}
