package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/platform-bootstrap/bootstrap/internal/apitls/apitlstest"
	"github.com/platform-bootstrap/bootstrap/internal/config"
)

var update = flag.Bool("update", false, "rewrite the .golden files of testdata/invalid")

func load(t *testing.T, path string) *config.Platform {
	t.Helper()
	p, diags := config.Load(path)
	if diags.HasErrors() {
		t.Fatalf("%s: %v", path, diags)
	}
	return p
}

// A file holding only provider "local" {} is a complete platform.
func TestMinimalDefaults(t *testing.T) {
	p, diags := config.Load("testdata/valid/minimal.hcl")
	if len(diags) != 0 {
		t.Fatalf("diagnostics for the minimal file: %v", diags)
	}
	abs, _ := filepath.Abs("testdata/valid")
	if p.Filename != "testdata/valid/minimal.hcl" || p.Dir != abs {
		t.Errorf("Filename %q Dir %q", p.Filename, p.Dir)
	}
	if p.Name != "platform" || p.Datacenter != "dc1" || p.Region != "global" {
		t.Errorf("names = %q %q %q", p.Name, p.Datacenter, p.Region)
	}
	l := p.Provider.Local
	if p.Provider.Type != "local" || l == nil || p.Provider.Static != nil || p.Provider.Terraform != nil {
		t.Fatalf("provider = %+v", p.Provider)
	}
	if l.Servers != 3 || l.Clients != 2 || l.Subnet != "127.0.1.0/24" || l.BinDir != "" {
		t.Errorf("local provider = %+v", *l)
	}
	if r := p.Provider.DefRange; r.Filename != "testdata/valid/minimal.hcl" || r.Start.Line != 1 {
		t.Errorf("provider DefRange = %v", r)
	}
	v := p.Vault
	if v.HA || len(v.Nodes) != 0 || v.KeyShares != 5 || v.KeyThreshold != 3 {
		t.Errorf("vault = %+v", v)
	}
	if got := v.VaultNodes([]string{"server-1", "server-2", "server-3"}); !reflect.DeepEqual(got, []string{"server-1"}) {
		t.Errorf("default Vault nodes = %v", got)
	}
	k := p.PKI
	if k.RootTTL != "87600h" || k.IntermediateTTL != "43800h" || k.LeafTTL != "24h" || !k.RevokeRootToken || len(k.CAs) != 0 || len(k.AppRoles) != 0 {
		t.Errorf("pki = %+v", k)
	}
	if c := p.Consul; c.Domain != "consul" || !c.UI || !c.DNS {
		t.Errorf("consul = %+v", c)
	}
	if n := p.Nomad; !reflect.DeepEqual(n.Namespaces, []string{"dev", "prod"}) || len(n.DeployNamespaces) != 0 || n.DrainDeadline != "5m" {
		t.Errorf("nomad = %+v", n)
	}
	j := p.Jobs
	if j.Driver != "auto" {
		t.Errorf("driver = %q", j.Driver)
	}
	for name, tc := range map[string]struct {
		got                config.Job
		count, cpu, memory int
	}{
		"fabio":         {j.Fabio, 0, 100, 128},
		"prometheus":    {j.Prometheus, 1, 300, 512},
		"alertmanager":  {j.Alertmanager, 1, 100, 128},
		"grafana":       {j.Grafana, 1, 200, 384},
		"node_exporter": {j.NodeExporter, 0, 50, 64},
	} {
		if !tc.got.Enabled || tc.got.Count != tc.count || tc.got.CPU != tc.cpu || tc.got.Memory != tc.memory || tc.got.Image != "" {
			t.Errorf("job %s = %+v", name, tc.got)
		}
	}
	if m := p.Monitoring; m.Retention != "15d" || m.ScrapeInterval != "15s" || m.AlertWebhookURL != "" || m.DashboardsDir != "" {
		t.Errorf("monitoring = %+v", m)
	}
	if p.GitLabRunner != nil {
		t.Errorf("gitlab runner = %+v without a block", p.GitLabRunner)
	}
}

func TestFullConfig(t *testing.T) {
	t.Setenv("BOOTSTRAP_TEST_RUNNER_TOKEN", "glrt-from-the-environment")
	p, diags := config.Load("testdata/valid/full.hcl")
	if len(diags) != 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	if p.Name != "acme-prod" || p.Datacenter != "fra1" || p.Region != "europe" {
		t.Errorf("names = %q %q %q", p.Name, p.Datacenter, p.Region)
	}
	if l := p.Provider.Local; l.Servers != 5 || l.Clients != 3 || l.Subnet != "127.0.7.0/24" || l.BinDir != "tools/bin" {
		t.Errorf("local = %+v", *l)
	}
	if v := p.Vault; !v.HA || !reflect.DeepEqual(v.Nodes, []string{"server-1", "server-3", "server-5"}) || v.KeyShares != 7 || v.KeyThreshold != 4 {
		t.Errorf("vault = %+v", v)
	}
	if got := p.Vault.VaultNodes([]string{"server-1", "server-2"}); !reflect.DeepEqual(got, p.Vault.Nodes) {
		t.Errorf("listed Vault nodes win: %v", got)
	}
	k := p.PKI
	if k.RootTTL != "175200h" || k.IntermediateTTL != "8760h" || k.LeafTTL != "72h" || k.RevokeRootToken {
		t.Errorf("pki = %+v", k)
	}
	if len(k.CAs) != 1 {
		t.Fatalf("cas = %+v", k.CAs)
	}
	ca := k.CAs[0]
	// file() reads relative to the configuration file, verbatim.
	if ca.Name != "apps" || ca.CommonName != "apps.internal" || ca.TTL != "87600h" || ca.KeyType != "ec" || ca.KeyBits != 384 {
		t.Errorf("ca = %+v", ca)
	}
	if len(ca.Intermediates) != 1 || ca.Intermediates[0].Name != "eu" || ca.Intermediates[0].CommonName != "apps eu intermediate" || ca.Intermediates[0].TTL != "43800h" {
		t.Errorf("intermediates = %+v", ca.Intermediates)
	}
	if len(ca.Roles) != 2 {
		t.Fatalf("roles = %+v", ca.Roles)
	}
	r := ca.Roles[0]
	want := config.Role{Name: "web", Issuer: "eu", AllowedDomains: []string{"web.apps.internal"}, AllowSubdomains: true, AllowBareDomain: true,
		AllowIPSANs: true, ServerFlag: true, KeyUsage: []string{"DigitalSignature"}, ExtKeyUsage: []string{"ServerAuth"},
		KeyType: "rsa", KeyBits: 2048, TTL: "24h", MaxTTL: "168h"}
	r.DefRange, r.IssuerRange, r.TTLRange, r.MaxTTLRange = hcl.Range{}, hcl.Range{}, hcl.Range{}, hcl.Range{}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("role web =\n%+v\nwant\n%+v", r, want)
	}
	if any := ca.Roles[1]; any.Name != "any" || !any.AllowAnyName || any.Issuer != "" {
		t.Errorf("role any = %+v", any)
	}
	if len(k.AppRoles) != 1 || k.AppRoles[0].Name != "web" || !reflect.DeepEqual(k.AppRoles[0].CAs, []string{"apps"}) || k.AppRoles[0].TokenTTL != "1h" || k.AppRoles[0].SecretIDTTL != "168h" {
		t.Errorf("approles = %+v", k.AppRoles)
	}
	if c := p.Consul; c.Domain != "cluster.internal" || c.UI || c.DNS {
		t.Errorf("consul = %+v", c)
	}
	if n := p.Nomad; !reflect.DeepEqual(n.Namespaces, []string{"dev", "staging", "prod"}) || !reflect.DeepEqual(n.DeployNamespaces, []string{"dev", "staging"}) || n.DrainDeadline != "90s" {
		t.Errorf("nomad = %+v", n)
	}
	j := p.Jobs
	if j.Driver != "docker" {
		t.Errorf("driver = %q", j.Driver)
	}
	// A job block keeps the defaults of what it does not set.
	for name, tc := range map[string]struct {
		got  config.Job
		want config.Job
	}{
		"fabio":         {j.Fabio, config.Job{Enabled: false, CPU: 100, Memory: 128}},
		"prometheus":    {j.Prometheus, config.Job{Enabled: true, Image: "prom/prometheus:v3.5.0", Count: 2, CPU: 500, Memory: 1024}},
		"alertmanager":  {j.Alertmanager, config.Job{Enabled: true, Image: "prom/alertmanager:v0.28.0", Count: 1, CPU: 100, Memory: 128}},
		"grafana":       {j.Grafana, config.Job{Enabled: true, Count: 1, CPU: 200, Memory: 512}},
		"node_exporter": {j.NodeExporter, config.Job{Enabled: true, CPU: 20, Memory: 64}},
	} {
		got := tc.got
		got.EnabledRange, got.ImageRange, got.CountRange, got.CPURange, got.MemoryRange = hcl.Range{}, hcl.Range{}, hcl.Range{}, hcl.Range{}, hcl.Range{}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("job %s = %+v, want %+v", name, got, tc.want)
		}
	}
	if m := p.Monitoring; m.Retention != "30d" || m.ScrapeInterval != "10s" || m.AlertWebhookURL != "https://hooks.example.com/alert" || m.DashboardsDir != "dashboards" {
		t.Errorf("monitoring = %+v", m)
	}
	g := p.GitLabRunner
	if g == nil || g.URL != "https://gitlab.example.com" || g.Token != "glrt-from-the-environment" || g.Executor != "shell" ||
		g.Concurrent != 4 || g.Image != "alpine:3.21" {
		t.Errorf("gitlab runner = %+v", g)
	}
}

func TestGitLabRunnerDefaults(t *testing.T) {
	t.Setenv("BOOTSTRAP_TEST_RUNNER_TOKEN", "glrt-x")
	p, diags := config.Parse("p.hcl", []byte("provider \"local\" {}\ngitlab_runner {\n  url = \"https://gitlab.com\"\n  token = env(\"BOOTSTRAP_TEST_RUNNER_TOKEN\")\n}\n"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if g := p.GitLabRunner; g.Executor != "docker" || g.Concurrent != 2 || g.Image != "alpine:3.20" || g.RemovedTags != nil {
		t.Errorf("gitlab runner defaults = %+v", g)
	}
}

func TestStaticAndTerraform(t *testing.T) {
	s := load(t, "testdata/valid/static.hcl").Provider
	if s.Type != "static" || s.Static == nil || len(s.Static.Nodes) != 2 {
		t.Fatalf("static provider = %+v", s)
	}
	n := s.Static.Nodes[0]
	if n.Name != "server-1" || !reflect.DeepEqual(n.Roles, []string{"server", "vault"}) || n.PublicIP != "203.0.113.10" || n.PrivateIP != "10.0.0.10" ||
		n.SSH == nil || n.SSH.User != "admin" || n.SSH.Port != 2222 || n.SSH.PrivateKeyFile != "~/.ssh/id_ed25519" {
		t.Errorf("node = %+v ssh %+v", n, n.SSH)
	}
	if c := s.Static.Nodes[1]; c.SSH != nil || c.PublicIP != "" {
		t.Errorf("client node = %+v", c)
	}

	tf := load(t, "testdata/valid/terraform.hcl").Provider.Terraform
	if tf == nil || tf.Module != "terraform/digitalocean" || tf.Backend != "s3" || tf.SSHTimeout != "10m" ||
		!reflect.DeepEqual(tf.BackendConfig, map[string]string{"bucket": "acme-tfstate"}) {
		t.Fatalf("terraform = %+v", tf)
	}
	// Each variable keeps its own type: a number next to a list.
	if len(tf.Vars) != 3 || !tf.Vars["region"].RawEquals(cty.StringVal("fra1")) || !tf.Vars["server_count"].RawEquals(cty.NumberIntVal(3)) ||
		!tf.Vars["ssh_keys"].RawEquals(cty.TupleVal([]cty.Value{cty.StringVal("laptop"), cty.StringVal("ci")})) {
		t.Errorf("vars = %#v", tf.Vars)
	}
	p, diags := config.Parse("t.hcl", []byte("provider \"terraform\" {\n  module = \"m\"\n}\n"))
	if diags.HasErrors() || p.Provider.Terraform.Backend != "local" || p.Provider.Terraform.SSHTimeout != "5m" {
		t.Errorf("terraform defaults: %+v %v", p.Provider.Terraform, diags)
	}
}

// A secret written into the file is accepted with a warning naming the place.
func TestLiteralSecretWarns(t *testing.T) {
	p, diags := config.Load("testdata/valid/literal_token.hcl")
	if diags.HasErrors() || p == nil {
		t.Fatal(diags)
	}
	if len(diags) != 1 || diags[0].Severity != hcl.DiagWarning || diags[0].Subject.Start.Line != 5 ||
		!strings.Contains(diags[0].Detail, `token = env("GITLAB_RUNNER_TOKEN")`) {
		t.Errorf("diagnostics = %v", diags)
	}
	if p.GitLabRunner.Token != "glrt-literal-token-in-the-file" {
		t.Errorf("token = %q", p.GitLabRunner.Token)
	}
}

// Every file under testdata/invalid is refused with the diagnostics in the
// .golden file next to it (the text `bootstrap validate` prints; the CLI
// test in cmd/bootstrap runs the binary on the same files and can -update).
func TestInvalidCorpus(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("only %d invalid configurations", len(files))
	}
	os.Unsetenv("BOOTSTRAP_TEST_UNSET_TOKEN")
	t.Setenv("HOME", t.TempDir())
	t.Chdir("testdata/invalid") // diagnostics name the file as given
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(strings.TrimSuffix(name, ".hcl"), func(t *testing.T) {
			p, diags := config.Load(name)
			if !diags.HasErrors() || p != nil {
				t.Fatalf("accepted: %v", diags)
			}
			var b strings.Builder
			config.WriteDiagnostics(&b, diags)
			golden := strings.TrimSuffix(name, ".hcl") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if b.String() != string(want) {
				t.Errorf("diagnostics:\n%s\nwant (golden):\n%s", b.String(), want)
			}
			for _, d := range diags {
				if d.Subject == nil || d.Subject.Filename != name || d.Subject.Start.Line < 1 {
					t.Errorf("diagnostic without a place in %s: %v", name, d)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, diags := config.Load(filepath.Join(t.TempDir(), "nope.hcl"))
	var b strings.Builder
	config.WriteDiagnostics(&b, diags)
	if !diags.HasErrors() || !strings.HasPrefix(b.String(), "Error: Cannot read configuration file; open ") || strings.Contains(b.String(), "<nil>") {
		t.Errorf("missing file: %q", b.String())
	}
}

func TestParseDuration(t *testing.T) {
	for s, want := range map[string]time.Duration{"15s": 15 * time.Second, "24h": 24 * time.Hour, "30d": 30 * 24 * time.Hour, "1h30m": 90 * time.Minute, "1d": 24 * time.Hour} {
		if got, err := config.ParseDuration(s); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0s", "-1h", "0d", "-2d", "1.5d", "d", "forever", "10"} {
		if d, err := config.ParseDuration(s); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", s, d)
		}
	}
}

func TestVaultNodesHA(t *testing.T) {
	v := config.Vault{HA: true}
	if got := v.VaultNodes([]string{"s1", "s2", "s3", "s4", "s5"}); !reflect.DeepEqual(got, []string{"s1", "s2", "s3"}) {
		t.Errorf("HA nodes = %v", got)
	}
	if got := v.VaultNodes([]string{"s1"}); !reflect.DeepEqual(got, []string{"s1"}) {
		t.Errorf("HA nodes with one server = %v", got)
	}
}

// What env() and file() return is a secret: the platform lists it for the
// redactor, in the order the file reads it.
func TestSecretsRecorded(t *testing.T) {
	t.Setenv("BOOTSTRAP_TEST_RUNNER_TOKEN", "glrt-from-the-environment")
	p := load(t, "testdata/valid/full.hcl")
	want := []string{"apps.internal", "glrt-from-the-environment"}
	if !reflect.DeepEqual(p.Secrets, want) {
		t.Errorf("Secrets = %q, want %q", p.Secrets, want)
	}
	if p := load(t, "testdata/valid/literal_token.hcl"); len(p.Secrets) != 0 {
		t.Errorf("a file without env() or file(): Secrets = %q", p.Secrets)
	}
}

// A diagnostic about a value read with env() or file() says what is wrong
// without printing the value, however short, and the value is left out of
// every other diagnostic too.
func TestDiagnosticsHideSecrets(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hook.txt"), []byte("hooks.example.com/s3cr3t-webhook-path\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, env, value, src string
		want                  string // in the output
	}{
		{"short value", "BOOTSTRAP_TEST_HOOK", "ftp://x",
			`monitoring { alert_webhook_url = env("BOOTSTRAP_TEST_HOOK") }`,
			`Invalid alert_webhook_url; alert_webhook_url = "<redacted>": write an http:// or https:// URL.`},
		{"in a template", "BOOTSTRAP_TEST_HOST", "gitlab.internal.example",
			`gitlab_runner {
  url   = "${env("BOOTSTRAP_TEST_HOST")}/ci"
  token = env("BOOTSTRAP_TEST_HOST")
}`,
			`Invalid url; url = "<redacted>": write the GitLab instance URL`},
		{"number", "BOOTSTRAP_TEST_SHARES", "11",
			`vault { key_shares = env("BOOTSTRAP_TEST_SHARES") }`,
			`Invalid key_shares; key_shares = <redacted>: Vault splits`},
		{"in a list", "BOOTSTRAP_TEST_ROLE", "s3cr3t-role",
			`provider "static" {
  node "server-1" {
    roles      = ["server", env("BOOTSTRAP_TEST_ROLE")]
    private_ip = "10.0.0.1"
  }
}`,
			`Unknown role; node "server-1": role "<redacted>" is not one of server, client, vault.`},
		// The value shows up in a diagnostic about another attribute.
		{"elsewhere", "BOOTSTRAP_TEST_NS", "team-s3cr3t-namespace",
			`nomad {
  namespaces        = ["dev", env("BOOTSTRAP_TEST_NS")]
  deploy_namespaces = ["qa"]
}`,
			`Unknown deploy namespace; deploy namespace "qa" is not in namespaces ["dev" "<redacted>"]`},
		{"file", "", "hooks.example.com/s3cr3t-webhook-path",
			`monitoring { alert_webhook_url = file("hook.txt") }`,
			`alert_webhook_url = "<redacted>": write an http:// or https:// URL.`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv(tc.env, tc.value)
			}
			src := tc.src
			if !strings.HasPrefix(src, "provider") {
				src = "provider \"local\" {}\n" + src
			}
			p, diags := config.Parse(filepath.Join(dir, "p.hcl"), []byte(src+"\n"))
			if !diags.HasErrors() || p != nil {
				t.Fatalf("accepted: %v", diags)
			}
			var b strings.Builder
			config.WriteDiagnostics(&b, diags)
			// The file's path is a random temporary directory that may
			// hold the digits of a short value.
			if strings.Contains(strings.ReplaceAll(b.String(), dir, "DIR"), tc.value) {
				t.Errorf("the value %q was printed:\n%s", tc.value, b.String())
			}
			if !strings.Contains(b.String(), tc.want) {
				t.Errorf("diagnostics:\n%s\nwant them to contain:\n%s", b.String(), tc.want)
			}
		})
	}
}

// A literal value is not a secret: its diagnostic still shows it, even when
// the same file reads other values with env().
func TestDiagnosticsShowLiterals(t *testing.T) {
	t.Setenv("BOOTSTRAP_TEST_RUNNER_TOKEN", "glrt-from-the-environment")
	src := `provider "local" {}
monitoring { alert_webhook_url = "hooks.example.com/alert" }
gitlab_runner {
  url   = "https://gitlab.example.com"
  token = env("BOOTSTRAP_TEST_RUNNER_TOKEN")
}
`
	_, diags := config.Parse("p.hcl", []byte(src))
	var b strings.Builder
	config.WriteDiagnostics(&b, diags)
	if want := `alert_webhook_url = "hooks.example.com/alert": write`; !strings.Contains(b.String(), want) {
		t.Errorf("diagnostics:\n%s\nwant %s", b.String(), want)
	}
}

// pgp_keys takes a key file's path or the key itself (file()), armored or
// base64, and hands Vault each one as a base64 binary public key.
func TestVaultPGPKeys(t *testing.T) {
	p := load(t, "testdata/valid/pgp.hcl")
	v := p.Vault
	if len(v.PGPKeys) != 3 || len(v.PGPKeysB64) != 3 {
		t.Fatalf("pgp keys: %d given, %d decoded", len(v.PGPKeys), len(v.PGPKeysB64))
	}
	bob, err := os.ReadFile("testdata/valid/pgp/bob.b64")
	if err != nil {
		t.Fatal(err)
	}
	if v.PGPKeysB64[1] != strings.TrimSpace(string(bob)) {
		t.Error("a base64 key was not passed on as it is")
	}
	// The armored key by path and by file() is the same key.
	if v.PGPKeysB64[0] != v.PGPKeysB64[2] {
		t.Error("alice.asc by path and by file() differ")
	}
	for i, k := range v.PGPKeysB64 {
		raw, err := base64.StdEncoding.DecodeString(k)
		// New-format packet, tag 6: a public key.
		if err != nil || len(raw) < 100 || raw[0] != 0xc0|6 && raw[0]&0xfc != 0x80|6<<2 {
			t.Errorf("key %d is not a base64 public key packet: %v", i, err)
		}
	}
	if p := load(t, "testdata/valid/minimal.hcl"); len(p.Vault.PGPKeys) != 0 || len(p.Vault.PGPKeysB64) != 0 {
		t.Errorf("pgp keys by default: %q", p.Vault.PGPKeys)
	}
}

// A key whose armor was damaged in a copy is refused, not sent to Vault.
func TestVaultPGPKeyChecksum(t *testing.T) {
	dir := t.TempDir()
	asc, err := os.ReadFile("testdata/valid/pgp/alice.asc")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(asc), "\n")
	// Flip one character of the first line of the key's body.
	b := []byte(lines[2])
	b[10] ^= 'A' ^ 'B'
	lines[2] = string(b)
	if err := os.WriteFile(filepath.Join(dir, "alice.asc"), []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	src := "provider \"local\" {}\nvault {\n  key_shares = 1\n  key_threshold = 1\n  pgp_keys = [\"alice.asc\"]\n}\n"
	_, diags := config.Parse(filepath.Join(dir, "platform.hcl"), []byte(src))
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "damaged") || diags[0].Subject.Start.Line != 5 {
		t.Errorf("damaged key: %v", diags)
	}
}

// A setting that is valid but has no effect in this configuration is
// accepted with a warning that names its place and says why.
func TestIneffectiveSettingsWarn(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"provider \"local\" {}\njobs {\n  grafana {\n    image = \"grafana/grafana:x\"\n  }\n}\n",
			`p.hcl:4,13-32: image has no effect; grafana image = "grafana/grafana:x": images are only used with driver = "docker"; the jobs run local binaries here (driver "auto" on the local provider).`},
		{"provider \"local\" {}\njobs {\n  alertmanager {\n    enabled = false\n  }\n}\nmonitoring {\n  alert_webhook_url = \"https://hooks.example.com/x\"\n}\n",
			`p.hcl:8,23-52: alert_webhook_url has no effect;`},
	} {
		p, diags := config.Parse("p.hcl", []byte(tc.src))
		if p == nil || diags.HasErrors() || len(diags) != 1 || diags[0].Severity != hcl.DiagWarning || !strings.HasPrefix(diags[0].Error(), tc.want) {
			t.Errorf("diagnostics %v, want one warning %s", diags, tc.want)
		}
	}
}

func TestDockerEngine(t *testing.T) {
	const static = "provider \"static\" {\n  node \"s\" {\n    roles = [\"server\", \"vault\"]\n    private_ip = \"10.0.0.10\"\n  }\n  node \"c\" {\n    roles = [\"client\"]\n    private_ip = \"10.0.0.20\"\n  }\n}\n"
	for _, tc := range []struct {
		name, src string
		pkg       string // "-": no engine
		daemon    string
	}{
		{"machines run the jobs on docker", static, "docker.io", ""},
		{"raw_exec needs none", static + "jobs {\n  driver = \"raw_exec\"\n}\n", "-", ""},
		{"a docker block asks for one anyway", static + "jobs {\n  driver = \"raw_exec\"\n}\ndocker {\n  package = \"docker-ce\"\n  daemon = { \"storage-driver\" = \"vfs\", iptables = false }\n}\n", "docker-ce", `{"iptables":false,"storage-driver":"vfs"}`},
		{"the machines' image has one", static + "docker {\n  package = \"\"\n}\n", "", ""},
		{"the local provider installs none", "provider \"local\" {}\njobs {\n  driver = \"docker\"\n}\n", "-", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, diags := config.Parse("p.hcl", []byte(tc.src))
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			d := p.DockerEngine()
			if tc.pkg == "-" {
				if d != nil {
					t.Fatalf("engine %+v, want none", d)
				}
				return
			}
			if d == nil {
				t.Fatal("no engine")
			}
			if d.Package != tc.pkg {
				t.Errorf("package %q, want %q", d.Package, tc.pkg)
			}
			if got, err := d.DaemonJSON(); err != nil || got != tc.daemon {
				t.Errorf("daemon.json %q (%v), want %q", got, err, tc.daemon)
			}
		})
	}
}

func TestIngressTLS(t *testing.T) {
	dir := t.TempDir()
	ca := apitlstest.NewCA(t, "test")
	apitlstest.WritePair(t, dir, ca.Issue(t, []string{"app.example.com"}))
	src := "provider \"static\" {\n  inventory = \"inventory.json\"\n}\ningress {\n  namespace = \"prod\"\n  tls {\n    cert_file = \"fullchain.pem\"\n    key_file  = \"privkey.pem\"\n  }\n}\n"
	path := filepath.Join(dir, "platform.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	p, diags := config.Load(path)
	if diags.HasErrors() || len(diags) > 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	if got := p.Ingress.TLS; got.Port != 443 || got.CertFile != "fullchain.pem" || got.KeyFile != "privkey.pem" {
		t.Errorf("tls = %+v, want port 443 (the default) and the files", got)
	}

	// A certificate that expires within two weeks works, with a warning.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), DNSNames: []string{"app.example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(5 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	apitlstest.WritePair(t, dir, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
	p, diags = config.Load(path)
	if p == nil || diags.HasErrors() || len(diags) != 1 || !strings.Contains(diags[0].Error(), "platform.hcl:7,17-32: Certificate expires soon;") {
		t.Errorf("diagnostics %v, want one warning that the certificate expires soon", diags)
	}
}
