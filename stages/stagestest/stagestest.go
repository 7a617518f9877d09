// Package stagestest builds stage environments for tests.
package stagestest

import (
	"path/filepath"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Env is an Env for the configuration src (platform.hcl in dir) over the
// state directory state, which is created if missing.
func Env(t testing.TB, dir, state, src string, rep stages.Reporter) *stages.Env {
	t.Helper()
	cfg, diags := config.Parse(filepath.Join(dir, "platform.hcl"), []byte(src))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	store, err := secrets.Open(filepath.Join(state, "secrets"), secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	st, err := statedir.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	return stages.NewEnv(cfg, state, store, st, nil, rep)
}
