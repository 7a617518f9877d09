package pki

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// harness is one real dev-mode Vault with a state directory that looks like
// the vault stage left it: address and CA as outputs, the root token in the
// secret store.
type harness struct {
	t     testing.TB
	vault *testcluster.Vault
	env   *stages.Env
	cfg   *config.Platform
	// audit is the file audit device's log: every request Vault served.
	audit string
}

func newHarness(t testing.TB, cfgFile string) *harness {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real Vault")
	}
	v := testcluster.StartVault(t)
	h := &harness{t: t, vault: v, audit: filepath.Join(v.Dir, "audit.log")}
	if err := v.Client.Sys().EnableAuditWithOptions("file", &api.EnableAuditOptions{
		Type:    "file",
		Options: map[string]string{"file_path": h.audit},
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	store, err := secrets.Open(filepath.Join(dir, "secrets"), secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(stages.SecretVaultRootToken, v.Token); err != nil {
		t.Fatal(err)
	}
	state, err := statedir.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := state.SetOutput(stages.OutVaultAddr, v.Addr); err != nil {
		t.Fatal(err)
	}
	if err := state.SetOutput(stages.OutVaultCACert, v.CACert); err != nil {
		t.Fatal(err)
	}
	h.cfg = loadConfig(t, cfgFile)
	h.env = stages.NewEnv(h.cfg, dir, store, state, nil, nil)
	// The nodes that get consul-template tokens.
	setInventory(t, h.env, testNodes(dir))
	return h
}

func loadConfig(t testing.TB, file string) *config.Platform {
	t.Helper()
	if file == "" {
		cfg, diags := config.Parse("platform.hcl", []byte(`provider "local" {}`))
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return cfg
	}
	cfg, diags := config.Load(file)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return cfg
}

func (h *harness) spec() Spec {
	h.t.Helper()
	s, err := FromConfig(h.cfg, h.vault.Addr)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// client returns a client with the token the stage would use.
func (h *harness) client() *api.Client {
	h.t.Helper()
	c, err := NewClient(h.vault.Addr, h.vault.CACert)
	if err != nil {
		h.t.Fatal(err)
	}
	tok, err := Token(context.Background(), h.env, c)
	if err != nil {
		h.t.Fatal(err)
	}
	c.SetToken(tok)
	return c
}

// tokenClient returns a client carrying tok.
func (h *harness) tokenClient(tok string) *api.Client {
	h.t.Helper()
	c, err := NewClient(h.vault.Addr, h.vault.CACert)
	if err != nil {
		h.t.Fatal(err)
	}
	c.SetToken(tok)
	return c
}

func (h *harness) plan() Result {
	h.t.Helper()
	res, err := Plan(context.Background(), h.client(), h.env, h.spec())
	if err != nil {
		h.t.Fatalf("plan: %v", err)
	}
	return res
}

func (h *harness) apply() Result {
	h.t.Helper()
	res, err := Apply(context.Background(), h.client(), h.env, h.spec())
	if err != nil {
		h.t.Fatalf("apply: %v", err)
	}
	return res
}

func (h *harness) secret(name string) string {
	h.t.Helper()
	v, ok, err := h.env.Secrets.Get(name)
	if err != nil || !ok {
		h.t.Fatalf("secret %s: ok=%v err=%v", name, ok, err)
	}
	return v
}

// auditMark returns the current end of the audit log.
func (h *harness) auditMark() int64 {
	fi, err := os.Stat(h.audit)
	if err != nil {
		h.t.Fatal(err)
	}
	return fi.Size()
}

// writesSince lists the requests after mark that can change Vault: every
// operation but read and list ("update sys/policies/acl/admin").
func (h *harness) writesSince(mark int64) []string {
	h.t.Helper()
	f, err := os.Open(h.audit)
	if err != nil {
		h.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(mark, 0); err != nil {
		h.t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	reads := 0
	for sc.Scan() {
		var entry struct {
			Type    string `json:"type"`
			Request struct {
				Operation string `json:"operation"`
				Path      string `json:"path"`
			} `json:"request"`
		}
		if err := json.Unmarshal(sc.Bytes(), &entry); err != nil {
			h.t.Fatalf("audit log: %v", err)
		}
		if entry.Type != "request" {
			continue
		}
		if slices.Contains([]string{"read", "list"}, entry.Request.Operation) {
			reads++
			continue
		}
		out = append(out, entry.Request.Operation+" "+entry.Request.Path)
	}
	if err := sc.Err(); err != nil {
		h.t.Fatal(err)
	}
	if reads == 0 {
		h.t.Fatal("the audit log recorded no request at all; is the audit device working?")
	}
	return out
}

// writePEM writes pem to a file in dir and returns its path.
func writePEM(t *testing.T, dir, name, pem string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.TrimSpace(pem)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// opensslVerify runs `openssl verify` and fails the test when it rejects.
func opensslVerify(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("openssl", append([]string{"verify"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
