package backup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/archive"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/stagestest"
)

func sample() (*archive.Manifest, []archive.Entry) {
	m := &archive.Manifest{Datacenter: "dc1", Region: "global"}
	return m, []archive.Entry{
		{Name: "vault.snap", Data: []byte("v")},
		{Name: "consul.snap", Data: []byte("c")},
		{Name: "nomad.snap", Data: []byte("n")},
		{Name: secretsPrefix + stages.SecretVaultInit, Data: []byte(`{"keys_base64":["k"]}`)},
		{Name: secretsPrefix + "consul/gossip-key", Data: []byte("g")},
		{Name: tlsPrefix + "vault/ca.pem", Data: []byte("ca")},
		{Name: "state/state.json", Data: []byte("{}")},
	}
}

func env(t *testing.T, src string) *stages.Env {
	dir := t.TempDir()
	return stagestest.Env(t, dir, filepath.Join(dir, ".bootstrap"), src, nil)
}

func TestUnpack(t *testing.T) {
	e := env(t, `provider "local" {}`)
	m, entries := sample()
	if err := Check(e, m, entries); err != nil {
		t.Fatal(err)
	}
	if err := Unpack(e, m, entries); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"vault", "consul", "nomad"} {
		if _, ok := e.RestoreSnapshot(p); !ok {
			t.Errorf("no %s snapshot waiting", p)
		}
	}
	if v, ok, _ := e.Secrets.Get("consul/gossip-key"); !ok || v != "g" {
		t.Errorf("gossip key: %q %v", v, ok)
	}
	if b, _ := os.ReadFile(e.Path("tls", "vault", "ca.pem")); string(b) != "ca" {
		t.Errorf("tls file: %q", b)
	}
	if _, err := os.Stat(e.Path("state.json")); err == nil {
		t.Error("the backup's state.json was restored; up rebuilds it")
	}
	for _, f := range []string{e.Path(stages.RestoreDir), e.Secrets.Dir()} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want 0700", f, fi.Mode(), err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(e.Path(stages.RestoreDir), "vault.snap")); fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot mode %v", fi.Mode())
	}

	// The same backup again carries on; another one is refused.
	if err := Unpack(e, m, entries); err != nil {
		t.Fatalf("the same backup again: %v", err)
	}
	other := *m
	other.Bootstrap = "other"
	var inUse *InUseError
	if err := Unpack(e, &other, entries); !errors.As(err, &inUse) || !strings.Contains(err.Error(), "another backup") {
		t.Fatalf("another backup during a restore: %v", err)
	}

	// Once the snapshots are in, the directory holds a platform.
	for _, p := range []string{"vault", "consul", "nomad"} {
		if err := e.RestoreDone(p); err != nil {
			t.Fatal(err)
		}
	}
	if e.Restoring() {
		t.Error("still restoring after every snapshot is in")
	}
	if err := Unpack(e, m, entries); !errors.As(err, &inUse) || !strings.Contains(err.Error(), "bootstrap down first") {
		t.Fatalf("restore over a platform: %v", err)
	}
}

func TestCheck(t *testing.T) {
	m, entries := sample()
	e := env(t, "datacenter = \"eu1\"\nprovider \"local\" {}")
	if err := Check(e, m, entries); err == nil || !strings.Contains(err.Error(), `datacenter "dc1"`) {
		t.Errorf("another datacenter: %v", err)
	}
	e = env(t, `provider "local" {}`)
	if err := Check(e, m, entries[1:]); err == nil || !strings.Contains(err.Error(), "no vault snapshot") {
		t.Errorf("no vault snapshot: %v", err)
	}
}
