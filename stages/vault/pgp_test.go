package vault

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	//lint:ignore SA1019 the tests play the key holders' gpg; bootstrap itself never decrypts
	"golang.org/x/crypto/openpgp"
	//lint:ignore SA1019 as above
	"golang.org/x/crypto/openpgp/armor"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/stagestest"
)

// rawVault is a real, uninitialised Vault server (not dev mode) on a
// loopback address, in memory, without TLS. Its working directory is Dir,
// like a local node's Vault in its node directory.
type rawVault struct {
	Addr   string
	Dir    string
	Client *vaultapi.Client
}

func startRawVault(t *testing.T) *rawVault {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real Vault")
	}
	bin := testcluster.Bin(t, "vault")
	ip := testcluster.NewSubnet(t).IP(1)
	dir, err := os.MkdirTemp("", "vault-stage-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := fmt.Sprintf(`storage "inmem" {}
disable_mlock = true
api_addr      = "http://%[1]s:8200"
listener "tcp" {
  address     = "%[1]s:8200"
  tls_disable = true
}
`, ip)
	if err := os.WriteFile(filepath.Join(dir, "vault.hcl"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	testcluster.Start(t, "vault", bin, []string{"server", "-config=vault.hcl"}, dir)
	v := &rawVault{Addr: "http://" + ip + ":8200", Dir: dir}
	c, err := vaultapi.NewClient(&vaultapi.Config{Address: v.Addr, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.ClearToken()
	v.Client = c
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := health(context.Background(), c); err == nil {
			return v
		} else if time.Now().After(deadline) {
			t.Fatalf("vault does not answer: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// testEnv is an Env over a fresh state directory with the configuration src.
func testEnv(t *testing.T, dir, src string) *stages.Env {
	t.Helper()
	return stagestest.Env(t, dir, filepath.Join(dir, "state"), src, nil)
}

// pgpKeyHolders makes one PGP key per share, as a key holder's gpg would,
// and writes the public keys to dir: armored, binary, and base64.
func pgpKeyHolders(t *testing.T, dir string) (openpgp.EntityList, []string) {
	t.Helper()
	var holders openpgp.EntityList
	var files []string
	for i, form := range []string{"armored", "binary", "base64"} {
		ent, err := openpgp.NewEntity(fmt.Sprintf("Key Holder %d", i), "test", fmt.Sprintf("holder%d@example.invalid", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		var pub bytes.Buffer
		if err := ent.Serialize(&pub); err != nil {
			t.Fatal(err)
		}
		var out []byte
		switch form {
		case "armored":
			var b bytes.Buffer
			w, err := armor.Encode(&b, openpgp.PublicKeyType, nil)
			if err != nil {
				t.Fatal(err)
			}
			w.Write(pub.Bytes())
			w.Close()
			out = b.Bytes()
		case "binary":
			out = pub.Bytes()
		case "base64":
			out = []byte(base64.StdEncoding.EncodeToString(pub.Bytes()) + "\n")
		}
		name := fmt.Sprintf("holder%d.%s", i, form)
		if err := os.WriteFile(filepath.Join(dir, name), out, 0o644); err != nil {
			t.Fatal(err)
		}
		holders = append(holders, ent)
		files = append(files, name)
	}
	return holders, files
}

// decryptShare is what a key holder does with keys_base64[i]:
// base64 -d | gpg -d. The result is the share in hex.
func decryptShare(t *testing.T, holder *openpgp.Entity, b64 string) string {
	t.Helper()
	msg, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("a stored share is not base64: %v", err)
	}
	md, err := openpgp.ReadMessage(bytes.NewReader(msg), openpgp.EntityList{holder}, nil, nil)
	if err != nil {
		t.Fatalf("the key holder cannot decrypt their share: %v", err)
	}
	plain, err := io.ReadAll(md.UnverifiedBody)
	if err != nil {
		t.Fatal(err)
	}
	return string(plain)
}

// TestInitWithPGPKeys initialises a real Vault with vault { pgp_keys }: the
// secret store holds only PGP messages, never a share in clear; bootstrap
// refuses to use them as keys and says how to unseal by hand; and what the
// key holders decrypt does unseal Vault.
func TestInitWithPGPKeys(t *testing.T) {
	v := startRawVault(t)
	dir := t.TempDir()
	holders, files := pgpKeyHolders(t, dir)
	e := testEnv(t, dir, fmt.Sprintf(`provider "local" {}
vault {
  key_shares    = 3
  key_threshold = 2
  pgp_keys      = [%q, %q, file(%q)]
}
`, files[0], files[1], files[2]))
	node := inventory.Node{Name: "server-1", PrivateIP: strings.TrimSuffix(strings.TrimPrefix(v.Addr, "http://"), ":8200")}
	h := nodeHealth{node: node, client: v.Client}
	ctx := context.Background()

	d, err := initVault(ctx, e, h)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(e.Secrets.Path(stages.SecretVaultInit))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := LoadInit(e)
	if err != nil {
		t.Fatal(err)
	}
	if !stored.PGPEncrypted || len(stored.KeysB64) != 3 || stored.Threshold != 2 || !d.PGPEncrypted {
		t.Fatalf("stored init: encrypted=%v, %d shares, threshold %d", stored.PGPEncrypted, len(stored.KeysB64), stored.Threshold)
	}
	var plain []string
	for i, share := range stored.KeysB64 {
		// Share i is for key holder i only.
		hexShare := decryptShare(t, holders[i], share)
		key, err := hex.DecodeString(hexShare)
		if err != nil || len(key) < 16 {
			t.Fatalf("share %d does not decrypt to a hex key share (%d bytes, %v)", i, len(hexShare), err)
		}
		for _, form := range []string{hexShare, base64.StdEncoding.EncodeToString(key)} {
			if bytes.Contains(raw, []byte(form)) {
				t.Fatalf("share %d is stored in clear in %s", i, e.Secrets.Path(stages.SecretVaultInit))
			}
		}
		if _, err := openpgp.ReadMessage(bytes.NewReader(mustB64(t, share)), openpgp.EntityList{holders[(i+1)%3]}, nil, nil); err == nil {
			t.Errorf("share %d opens with another holder's key", i)
		}
		plain = append(plain, hexShare)
	}

	// Bootstrap never submits the encrypted shares, and says what to do.
	st, err := v.Client.Sys().SealStatus()
	if err != nil || !st.Sealed {
		t.Fatalf("seal status after init: %v %v", st, err)
	}
	if err := submitKeys(ctx, v.Client, st, stored); err == nil || !strings.Contains(err.Error(), "vault operator unseal") {
		t.Errorf("submitKeys with encrypted shares: %v", err)
	}
	if st, _ := v.Client.Sys().SealStatus(); st.Progress != 0 {
		t.Errorf("unseal progress %d after bootstrap's attempt, want 0", st.Progress)
	}
	help := manualUnsealHelp(e, []inventory.Node{node}, stored)
	for _, want := range []string{"vault operator unseal", "pgp_keys", e.Secrets.Path(stages.SecretVaultInit), "VAULT_ADDR=" + Addr(node), "bootstrap up again", "and 2 of the holders"} {
		if !strings.Contains(help, want) {
			t.Errorf("the unseal instructions lack %q:\n%s", want, help)
		}
	}
	for i := range plain {
		if strings.Contains(help, plain[i]) || strings.Contains(help, stored.KeysB64[i]) {
			t.Errorf("the unseal instructions show share %d", i)
		}
	}
	e.Config.Vault.PGPKeysB64 = nil
	if out := captureWarnings(t, e, stored); !strings.Contains(out, "cannot unseal") {
		t.Errorf("no warning that the shares are encrypted: %q", out)
	}

	// What the key holders decrypt is the real thing: two shares unseal.
	for _, k := range plain[1:] {
		if _, err := v.Client.Sys().Unseal(k); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := v.Client.Sys().SealStatus(); err != nil || st.Sealed {
		t.Fatalf("vault still sealed with two decrypted shares: %v %v", st, err)
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// captureWarnings returns the warnings warnPGPMismatch gives.
func captureWarnings(t *testing.T, e *stages.Env, init *InitData) string {
	t.Helper()
	var rec recorder
	warnPGPMismatch(stages.NewEnv(e.Config, e.StateDir, e.Secrets, e.State, nil, &rec), init)
	return strings.Join(rec.msgs, "\n")
}

type recorder struct{ msgs []string }

func (r *recorder) Event(ev stages.Event) { r.msgs = append(r.msgs, ev.Message) }

// TestAuditDevice enables the audit device on a real Vault the way the
// stage does: with the local nodes' relative file_path the log lands in the
// node's own directory, mode 0600; it records requests with their secrets
// HMAC'd; a second run changes nothing; other options are put right.
func TestAuditDevice(t *testing.T) {
	v := startRawVault(t)
	ctx := context.Background()
	init, err := v.Client.Sys().Init(&vaultapi.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Client.Sys().Unseal(init.KeysB64[0]); err != nil {
		t.Fatal(err)
	}
	c := v.Client
	c.SetToken(init.RootToken)
	// The vault role makes the directory.
	if err := os.MkdirAll(filepath.Join(v.Dir, "logs", "vault"), 0o700); err != nil {
		t.Fatal(err)
	}
	e := testEnv(t, t.TempDir(), `provider "local" {}`)
	nodes := []inventory.Node{{Name: "server-1", Local: &inventory.Local{Root: v.Dir}}}
	want := auditOptions(e, nodes)
	if want["file_path"] != "logs/vault/audit.log" || want["mode"] != "0600" {
		t.Fatalf("audit options for a local node: %v", want)
	}

	ch, err := auditChange(ctx, c, want)
	if err != nil || ch == nil || ch.Action != "enable" || ch.Target != "vault audit device file" {
		t.Fatalf("change on a Vault without audit: %v %v", ch, err)
	}
	if err := audit(ctx, e.Plan(true), c, want); err != nil {
		t.Fatal(err)
	}
	if ch, err := auditChange(ctx, c, want); err != nil || ch != nil {
		t.Fatalf("change after enabling: %v %v", ch, err)
	}
	devs, err := c.Sys().ListAudit()
	if err != nil || len(devs) != 1 {
		t.Fatalf("audit devices: %v %v", devs, err)
	}
	if err := audit(ctx, e.Plan(true), c, want); err != nil {
		t.Fatal(err)
	}

	// Requests and responses with secrets in them: a password, a token.
	secret := "password-" + rand.Text()
	if err := c.Sys().EnableAuthWithOptions("userpass", &vaultapi.EnableAuthOptions{Type: "userpass"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Logical().Write("auth/userpass/users/probe", map[string]any{"password": secret}); err != nil {
		t.Fatal(err)
	}
	login, err := c.Logical().Write("auth/userpass/login/probe", map[string]any{"password": secret})
	if err != nil || login.Auth == nil {
		t.Fatalf("login: %v", err)
	}
	log := filepath.Join(v.Dir, "logs", "vault", "audit.log")
	fi, err := os.Stat(log)
	if err != nil {
		t.Fatalf("the audit log is not in the node's directory: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", fi.Mode().Perm())
	}
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var entry struct {
			Request struct{ Path string } `json:"request"`
		}
		if err := json.Unmarshal(sc.Bytes(), &entry); err != nil {
			t.Fatalf("audit log line: %v", err)
		}
		paths[entry.Request.Path] = true
	}
	for _, p := range []string{"auth/userpass/users/probe", "auth/userpass/login/probe"} {
		if !paths[p] {
			t.Errorf("request %s not audited; audited: %v", p, paths)
		}
	}
	for name, s := range map[string]string{"root token": init.RootToken, "login token": login.Auth.ClientToken, "password": secret} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("the audit log holds the %s in clear", name)
		}
	}
	if !bytes.Contains(b, []byte("hmac-sha256:")) {
		t.Error("no HMAC'd value in the audit log")
	}

	// Someone turned on log_raw: the plan says so and apply puts it right.
	if err := c.Sys().DisableAudit("file"); err != nil {
		t.Fatal(err)
	}
	raw := map[string]string{"file_path": want["file_path"], "mode": "0600", "log_raw": "true"}
	if err := c.Sys().EnableAuditWithOptions("file", &vaultapi.EnableAuditOptions{Type: "file", Options: raw}); err != nil {
		t.Fatal(err)
	}
	ch, err = auditChange(ctx, c, want)
	if err != nil || ch == nil || ch.Action != "update" || !strings.Contains(ch.Detail, "log_raw=true") {
		t.Fatalf("change with log_raw: %v %v", ch, err)
	}
	if err := audit(ctx, e.Plan(true), c, want); err != nil {
		t.Fatal(err)
	}
	if ch, err := auditChange(ctx, c, want); err != nil || ch != nil {
		t.Fatalf("change after the fix: %v %v", ch, err)
	}
}

// auditChange is the change audit finds, or nil; it only reads.
func auditChange(ctx context.Context, c *vaultapi.Client, want map[string]string) (*stages.Change, error) {
	p := &reconcile.Plan{}
	if err := audit(ctx, p, c, want); err != nil || len(p.Changes) == 0 {
		return nil, err
	}
	return &p.Changes[0], nil
}

// TestVaultStagePGP runs the stage with vault { pgp_keys } on the local
// provider: up initialises Vault, then stops and says how to unseal it;
// plan shows the manual unseal; once the key holders have unsealed it with
// `vault operator unseal`, up finishes and a restart asks for them again.
func TestVaultStagePGP(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up a platform")
	}
	keys := t.TempDir()
	holders, files := pgpKeyHolders(t, keys)
	for i := range files {
		files[i] = filepath.Join(keys, files[i])
	}
	p := platformtest.New(t, "  servers = 1\n  clients = 1\n", fmt.Sprintf(
		"vault {\n  key_shares    = 3\n  key_threshold = 2\n  pgp_keys      = [%q, %q, %q]\n}\n", files[0], files[1], files[2]))
	only := []string{"--only", "keys,provision,vault"}
	initFile := filepath.Join(p.StateDir(), "secrets", "vault", "init.json")
	var plain []string

	needsHands := func(t *testing.T, r platformtest.Result) {
		t.Helper()
		if r.Code == 0 {
			t.Fatalf("up with a sealed vault and encrypted shares succeeded:\n%s", r.Output())
		}
		if testing.Verbose() {
			t.Logf("up with a sealed vault:\n%s", r.Output())
		}
		for _, want := range []string{"bootstrap cannot unseal it", "vault operator unseal", "gpg -dq", initFile} {
			if !strings.Contains(r.Output(), want) {
				t.Errorf("up does not say %q:\n%s", want, r.Output())
			}
		}
		if r := p.Run(append([]string{"plan"}, only...)); r.Code != 4 || !strings.Contains(r.Stdout, "unseal vault on ") || !strings.Contains(r.Stdout, "by hand") {
			t.Errorf("plan with a sealed vault: exit %d, want 4 and a manual unseal\n%s", r.Code, r.Output())
		}
	}
	unsealByHand := func(t *testing.T) {
		t.Helper()
		for _, k := range plain[:2] {
			cmd := exec.Command(testcluster.Bin(t, "vault"), "operator", "unseal", k)
			cmd.Env = append(os.Environ(), "VAULT_ADDR=https://"+p.Subnet.IP(1)+":8200", "VAULT_CACERT="+filepath.Join(p.StateDir(), "tls", "vault", "ca.pem"))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("vault operator unseal: %v\n%s", err, out)
			}
		}
	}

	t.Run("up initialises and asks for the key holders", func(t *testing.T) {
		needsHands(t, p.Run(append([]string{"up"}, only...)))
		raw, err := os.ReadFile(initFile)
		if err != nil {
			t.Fatal(err)
		}
		var d InitData
		if err := json.Unmarshal(raw, &d); err != nil || !d.PGPEncrypted || len(d.KeysB64) != 3 {
			t.Fatalf("init.json: %v encrypted=%v shares=%d", err, d.PGPEncrypted, len(d.KeysB64))
		}
		for i, s := range d.KeysB64 {
			plain = append(plain, decryptShare(t, holders[i], s))
			if bytes.Contains(raw, []byte(plain[i])) {
				t.Fatalf("share %d in clear in init.json", i)
			}
		}
	})
	if len(plain) == 0 {
		t.FailNow()
	}

	t.Run("unsealed by hand, up finishes", func(t *testing.T) {
		unsealByHand(t)
		p.Up(only...)
		if r := p.Run(append([]string{"plan"}, only...)); r.Code != 0 {
			t.Errorf("plan after up: exit %d\n%s", r.Code, r.Output())
		}
		if _, err := os.Stat(filepath.Join(p.StateDir(), "nodes", "server-1", "logs", "vault", "audit.log")); err != nil {
			t.Errorf("no audit log: %v", err)
		}
	})

	t.Run("after a restart the key holders unseal again", func(t *testing.T) {
		pid, err := proc.ReadPidFile(filepath.Join(p.StateDir(), "nodes", "server-1", "run", "vault.pid"))
		if err != nil {
			t.Fatal(err)
		}
		if err := proc.Terminate(context.Background(), pid, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		needsHands(t, p.Run(append([]string{"up"}, only...)))
		unsealByHand(t)
		p.Up(only...)
	})

	p.AssertNoSecrets()
	// The decrypted shares never passed through bootstrap; make sure of it.
	texts := []string{p.Run([]string{"status"}).Output()}
	logs, _ := filepath.Glob(filepath.Join(p.StateDir(), "logs", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		texts = append(texts, string(b))
	}
	for _, txt := range texts {
		for i, k := range plain {
			if strings.Contains(txt, k) {
				t.Errorf("share %d appears in bootstrap's output or logs", i)
			}
		}
	}
}
