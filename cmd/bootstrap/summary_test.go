package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// The end of up, as a user reads it: every line of it can be pasted.
func TestSummaryLines(t *testing.T) {
	cfg := config.Defaults()
	out := map[string]string{
		stages.OutVaultAddr:           "https://127.0.1.1:8200",
		stages.OutConsulAddr:          "https://127.0.1.1:8501",
		stages.OutNomadAddr:           "https://127.0.1.1:4646",
		stages.OutNomadCACert:         "/s/tls/nomad/ca.pem",
		stages.OutGrafanaAddr:         "http://127.0.1.4:9999/grafana",
		stages.OutFabioAddr:           "http://127.0.1.4:9999",
		stages.OutFabioAppAddr("dev"): "http://127.0.1.4:10001",
	}
	var b strings.Builder
	printURLs(&b, out, "/s/secrets", cfg, "bin/bootstrap")
	bin, _ := filepath.Abs("bin")
	want := `
  Vault         https://127.0.1.1:8200
  Consul UI     https://127.0.1.1:8501/ui/
  Nomad UI      https://127.0.1.1:4646/ui/
  Grafana       http://127.0.1.4:9999/grafana
  Fabio         http://127.0.1.4:9999
  Apps (dev)    http://127.0.1.4:10001

  Secrets (unseal keys, tokens) are in /s/secrets (0700).
  Use the CLIs: eval "$(bin/bootstrap env --token admin)"
  To type just bootstrap: export PATH="` + bin + `:$PATH"

  GitLab CI/CD variables for deploys (bootstrap deploy); each NOMAD_TOKEN scoped to its
  environment, and protected where merge requests must not deploy (prod):
    NOMAD_ADDR    https://127.0.1.1:4646
    NOMAD_CACERT  a file variable with the contents of /s/tls/nomad/ca.pem
    NOMAD_TOKEN   scope dev:  masked, the contents of /s/secrets/nomad/tokens/ci-dev
    NOMAD_TOKEN   scope prod: masked, the contents of /s/secrets/nomad/tokens/ci-prod
`
	if b.String() != want {
		t.Errorf("summary:\n%s\nwant:\n%s", b.String(), want)
	}

	// On PATH, or with another configuration: no PATH hint, the -c kept.
	b.Reset()
	printURLs(&b, out, "/s/secrets", cfg, "bootstrap -c 'my platform.hcl'")
	if s := b.String(); strings.Contains(s, "export PATH") || !strings.Contains(s, `eval "$(bootstrap -c 'my platform.hcl' env --token admin)"`) {
		t.Errorf("summary of bootstrap on PATH:\n%s", s)
	}
}
