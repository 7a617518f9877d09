// Package jobs holds the Nomad job files of the platform's own services
// (Fabio, Prometheus with Alertmanager, Grafana, node-exporter, GitLab
// Runner), embedded in the binary, and what the jobs stage needs to submit
// them: their sources and an encoder for their HCL2 variables.
//
// Every job runs in the "general" namespace and takes the variables
// documented at the top of its file. Two driver profiles: "docker" with
// images (production) and "raw_exec"/"exec" with binaries already on the
// clients (the local provider, machines without a Docker engine). Services
// bind and register the client's node meta "node_address".
package jobs

import (
	"embed"
	"fmt"
	"path"
	"sort"
	"strings"
)

//go:embed *.nomad.hcl
var files embed.FS

// The platform jobs, by the name of their file and job.
const (
	Fabio        = "fabio"
	Prometheus   = "prometheus" // with Alertmanager
	Grafana      = "grafana"
	NodeExporter = "node-exporter"
	GitLabRunner = "gitlab-runner"
)

// Namespace is where every platform job runs.
const Namespace = "general"

// Files returns every job file: job name (e.g. "prometheus") to HCL source.
func Files() map[string]string {
	entries, err := files.ReadDir(".")
	if err != nil {
		panic(err) // embedded at build time
	}
	out := map[string]string{}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".nomad.hcl")
		if !ok {
			continue
		}
		b, err := files.ReadFile(e.Name())
		if err != nil {
			panic(err)
		}
		out[name] = string(b)
	}
	return out
}

// File returns the source of one job.
func File(name string) (string, error) {
	b, err := files.ReadFile(path.Clean(name) + ".nomad.hcl")
	if err != nil {
		return "", fmt.Errorf("no platform job %q (have %s)", name, strings.Join(Names(), ", "))
	}
	return string(b), nil
}

// Names returns the job names, sorted.
func Names() []string {
	var names []string
	for n := range Files() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Files the prometheus job writes, relative to its prometheus.yml (which
// Prometheus resolves relative paths against), for
// monitoring.PrometheusConfig.
const (
	PrometheusConsulTokenFile = "../secrets/consul.token"
	PrometheusNomadTokenFile  = "../secrets/nomad.token"
	// Nomad writes and renews the task's own Vault token here.
	PrometheusVaultTokenFile = "../secrets/vault_token"
)

// PrometheusCAFile is where the prometheus job writes the CA named name
// of its ca_pems variable, relative to prometheus.yml.
func PrometheusCAFile(name string) string { return "ca/" + name + ".pem" }

// The template delimiters the jobs use for files passed in as variables:
// text containing them would be interpreted by consul-template.
const (
	TemplateLeftDelim  = "[[nomad-template-unused"
	TemplateRightDelim = "nomad-template-unused]]"
)
