package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// platformState writes the state directory of a platform that is up: every
// output and every token.
func platformState(t *testing.T, withAdminToken bool) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	os.MkdirAll(dir, 0o700)
	st, err := statedir.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		stages.OutVaultAddr:           "https://127.0.1.1:8200",
		stages.OutVaultCACert:         "/srv/it's here/vault-ca.pem", // a quote to escape
		stages.OutConsulAddr:          "https://127.0.1.1:8501",
		stages.OutConsulCACert:        "/srv/consul-ca.pem",
		stages.OutNomadAddr:           "https://127.0.1.1:4646",
		stages.OutNomadCACert:         "/srv/nomad-ca.pem",
		stages.OutPrometheusAddr:      "http://127.0.1.4:9090",
		stages.OutAlertmanagerAddr:    "http://127.0.1.4:9093",
		stages.OutGrafanaAddr:         "http://127.0.1.4:3000",
		stages.OutFabioAddr:           "http://127.0.1.4:9999",
		stages.OutFabioUIAddr:         "http://127.0.1.4:9998",
		stages.OutFabioAppAddr("dev"): "http://127.0.1.4:10001",
		stages.OutNomadTLSServerName:  "server.global.nomad",
		stages.OutConsulTLSServerName: "server.dc1.consul",
	} {
		if err := st.SetOutput(k, v); err != nil {
			t.Fatal(err)
		}
	}
	store, err := secrets.Open(filepath.Join(dir, "secrets"), secrets.NewRedactor())
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{
		stages.SecretVaultRootToken:           "hvs.root-token-value\n",
		stages.SecretConsulBootstrapToken:     "11111111-consul-bootstrap\n",
		stages.SecretConsulOperatorToken:      "22222222-consul-operator",
		stages.SecretNomadBootstrapToken:      "33333333-nomad-bootstrap\n",
		stages.SecretNomadDeployToken("dev"):  "44444444-nomad-ci-dev",
		stages.SecretNomadDeployToken("prod"): "66666666-nomad-ci-prod",
		stages.SecretNomadUIToken:             "55555555-nomad-ui",
	}
	if withAdminToken {
		tokens[stages.SecretVaultAdminToken] = "hvs.admin-token-value\n"
	}
	for k, v := range tokens {
		if err := store.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const baseExports = `export ALERTMANAGER_ADDR='http://127.0.1.4:9093'
export CONSUL_CACERT='/srv/consul-ca.pem'
export CONSUL_HTTP_ADDR='https://127.0.1.1:8501'
export CONSUL_TLS_SERVER_NAME='server.dc1.consul'
export FABIO_ADDR='http://127.0.1.4:9999'
export FABIO_DEV_ADDR='http://127.0.1.4:10001'
export FABIO_UI_ADDR='http://127.0.1.4:9998'
export GRAFANA_ADDR='http://127.0.1.4:3000'
export NOMAD_ADDR='https://127.0.1.1:4646'
export NOMAD_CACERT='/srv/nomad-ca.pem'
export NOMAD_TLS_SERVER_NAME='server.global.nomad'
export PROMETHEUS_ADDR='http://127.0.1.4:9090'
export VAULT_ADDR='https://127.0.1.1:8200'
export VAULT_CACERT='/srv/it'"'"'s here/vault-ca.pem'
export VAULT_TLS_SERVER_NAME='vault.service.consul'
`

// withLines adds lines to baseExports, keeping the sorted order.
func withLines(lines ...string) string {
	all := append(strings.Split(strings.TrimSuffix(baseExports, "\n"), "\n"), lines...)
	for i := range all { // insertion sort by variable name
		for j := i; j > 0 && all[j] < all[j-1]; j-- {
			all[j], all[j-1] = all[j-1], all[j]
		}
	}
	return strings.Join(all, "\n") + "\n"
}

func TestEnvCommand(t *testing.T) {
	cfg := minimalConfig(t)
	state := platformState(t, true)
	for _, tc := range []struct {
		token  string
		want   string
		stderr string
	}{
		{"", baseExports, ""},
		{"admin", withLines("export CONSUL_HTTP_TOKEN='11111111-consul-bootstrap'", "export NOMAD_TOKEN='33333333-nomad-bootstrap'", "export VAULT_TOKEN='hvs.admin-token-value'"), ""},
		{"ci-dev", withLines("export NOMAD_TOKEN='44444444-nomad-ci-dev'"), ""},
		{"ci-prod", withLines("export NOMAD_TOKEN='66666666-nomad-ci-prod'"), ""},
		// The old name still works, for dev only, and says so.
		{"ci", withLines("export NOMAD_TOKEN='44444444-nomad-ci-dev'"), "bootstrap env: --token ci is deprecated: it is --token ci-dev now; use ci-dev or ci-prod\n"},
		{"ui", withLines("export CONSUL_HTTP_TOKEN='22222222-consul-operator'", "export NOMAD_TOKEN='55555555-nomad-ui'"), ""},
	} {
		args := []string{"env", "-c", cfg, "--state-dir", state}
		if tc.token != "" {
			args = append(args, "--token", tc.token)
		}
		r := runIn(t, filepath.Dir(cfg), nil, args...)
		if r.code != exitOK || r.stdout != tc.want || r.stderr != tc.stderr {
			t.Errorf("env --token %q: exit %d, stderr %q, stdout:\n%s\nwant:\n%s", tc.token, r.code, r.stderr, r.stdout, tc.want)
		}
	}

	// What a shell makes of it: eval gives back the exact values.
	r := runIn(t, filepath.Dir(cfg), nil, "env", "-c", cfg, "--state-dir", state, "--token", "admin")
	sh := exec.Command("sh", "-c", `eval "$1"; printf '%s|%s' "$VAULT_CACERT" "$VAULT_TOKEN"`, "sh", r.stdout)
	out, err := sh.Output()
	if err != nil || string(out) != "/srv/it's here/vault-ca.pem|hvs.admin-token-value" {
		t.Errorf("eval of the exports: %q, %v", out, err)
	}
}

// Before the pki stage creates the admin identity, --token admin falls back
// to Vault's root token.
func TestEnvAdminFallsBackToRootToken(t *testing.T) {
	cfg := minimalConfig(t)
	state := platformState(t, false)
	r := runIn(t, filepath.Dir(cfg), nil, "env", "-c", cfg, "--state-dir", state, "--token", "admin")
	want := withLines("export CONSUL_HTTP_TOKEN='11111111-consul-bootstrap'", "export NOMAD_TOKEN='33333333-nomad-bootstrap'", "export VAULT_TOKEN='hvs.root-token-value'")
	if r.code != exitOK || r.stdout != want {
		t.Errorf("exit %d, stderr %q, stdout:\n%s\nwant:\n%s", r.code, r.stderr, r.stdout, want)
	}
}

func TestEnvErrors(t *testing.T) {
	cfg := minimalConfig(t)
	state := platformState(t, true)
	for _, tok := range []string{"root", "ADMIN", "admin,ci", "ci-"} {
		r := runIn(t, filepath.Dir(cfg), nil, "env", "-c", cfg, "--state-dir", state, "--token", tok)
		if r.code != exitUsage || r.stdout != "" || r.stderr != `Error: --token "`+tok+`": use admin, ui or ci-NAMESPACE (e.g. ci-dev)`+"\n" {
			t.Errorf("--token %s: exit %d, %q, %q", tok, r.code, r.stdout, r.stderr)
		}
	}
	r0 := runIn(t, filepath.Dir(cfg), nil, "env", "-c", cfg, "--state-dir", state, "--token", "ci-general")
	if r0.code != exitUsage || r0.stderr != `Error: --token "ci-general": "general" is not a deploy namespace; deploy tokens: ci-dev, ci-prod`+"\n" {
		t.Errorf("--token ci-general: exit %d, %q", r0.code, r0.stderr)
	}
	empty := filepath.Join(t.TempDir(), "none")
	r := runIn(t, filepath.Dir(cfg), nil, "env", "-c", cfg, "--state-dir", empty)
	if r.code != exitFailure || r.stderr != "Error: no platform state in "+empty+": run `bootstrap up` first\n" {
		t.Errorf("env without state: exit %d, %q", r.code, r.stderr)
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Error("env created a state directory")
	}
}

// The summary's CLI hint is a command the user can paste: the path bootstrap
// was run by and a configuration that is not the default.
func TestSelfCommand(t *testing.T) {
	for _, tc := range []struct{ config, want string }{
		{"platform.hcl", os.Args[0]},
		{"lab dir/lab.hcl", os.Args[0] + ` -c 'lab dir/lab.hcl'`},
	} {
		if got := (&globals{config: tc.config}).self(); got != tc.want {
			t.Errorf("config %q: %q, want %q", tc.config, got, tc.want)
		}
	}
}
