package jobs

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/apitls/apitlstest"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	platformjobs "github.com/platform-bootstrap/bootstrap/jobs"
	"github.com/platform-bootstrap/bootstrap/monitoring"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/stagestest"
	"github.com/platform-bootstrap/bootstrap/tools"
)

// wantedFor returns the jobs the stage would submit for the configuration
// src, by job name, from a fixed inventory of one server and two clients.
func wantedFor(t *testing.T, src string) map[string]platformjobs.Variables {
	t.Helper()
	dir := t.TempDir()
	dash := monitoring.Dashboards()
	if err := os.Mkdir(filepath.Join(dir, "dashboards"), 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range dash {
		if err := os.WriteFile(filepath.Join(dir, "dashboards", "mine-"+name), b, 0o600); err != nil {
			t.Fatal(err)
		}
		break
	}
	// For an ingress tls block: fullchain.pem and privkey.pem.
	apitlstest.WritePair(t, dir, apitlstest.NewCA(t, "ingress").Issue(t, []string{"app.example.com"}))
	state := filepath.Join(dir, "state")
	e := stagestest.Env(t, dir, state, src, nil)
	for _, ca := range []string{e.CAFile("consul"), e.CAFile("nomad"), filepath.Join(state, "vault-ca.pem")} {
		if err := os.MkdirAll(filepath.Dir(ca), 0o700); err != nil {
			t.Fatal(err)
		}
		pem, err := os.ReadFile(apitlstest.NewCA(t, filepath.Base(ca)).File)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ca, pem, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.State.SetOutput(stages.OutVaultCACert, filepath.Join(state, "vault-ca.pem")); err != nil {
		t.Fatal(err)
	}
	// The binaries of the raw_exec profile: only their paths are used.
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(filepath.Join(bin, "grafana-home"), 0o700); err != nil {
		t.Fatal(err)
	}
	local := func(name string) *inventory.Local {
		return &inventory.Local{Root: filepath.Join(dir, name), BinDir: bin}
	}
	inv := &inventory.Inventory{Version: inventory.Version, Nodes: []inventory.Node{
		{Name: "server-1", Roles: []string{"server", "vault"}, PrivateIP: "127.0.1.1", Local: local("server-1")},
		{Name: "client-1", Roles: []string{"client"}, PrivateIP: "127.0.1.2", Local: local("client-1")},
		{Name: "client-2", Roles: []string{"client"}, PrivateIP: "127.0.1.3", Local: local("client-2")},
	}}
	specs, err := wanted(e, &platform{cfg: e.Config, inv: inv})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]platformjobs.Variables{}
	for _, sp := range specs {
		out[sp.Name] = sp.Vars
	}
	return out
}

// Every documented setting of platform.hcl that the jobs stage deploys
// changes what it submits: starting from the defaults, one setting at a
// time, the job's variables change the way the setting says, and nothing
// is submitted for a disabled job. What the variables do to the job itself
// (a group's count, the image, the alertmanager group left out) is checked
// against a real Nomad by jobs.TestJobsOnNomad ("settings change the job").
// Settings deployed elsewhere are tested where they take effect: consul
// { ui } by ansible.TestConsulUISetting; vault, pki and nomad { namespaces,
// deploy_namespaces } by their stages' tests against real servers. Settings
// that would reach nothing are refused by the configuration
// (internal/config testdata/invalid: gitlab_tags_removed, system_job_count,
// alertmanager_count, alertmanager_without_prometheus).
func TestEverySettingChangesTheJobs(t *testing.T) {
	// The docker driver: images apply, and no binaries are needed.
	const base = "provider \"local\" {}\n"
	const docker = "driver = \"docker\"\n"
	const runner = "gitlab_runner {\n  url = \"https://gitlab.example.com\"\n  token = env(\"HOME\")\n%s}\n"
	def := wantedFor(t, base+"jobs {\n"+docker+"}\n"+fmt.Sprintf(runner, ""))

	// contains is a variable holding text that must contain the string.
	type contains string
	for _, tc := range []struct {
		setting string // written into platform.hcl
		job     string
		absent  bool // the job is not submitted
		vars    map[string]any
	}{
		{setting: `name = "acme"`, job: platformjobs.Prometheus, vars: map[string]any{"prometheus_yml": contains(`platform: "acme"`)}},
		{setting: `datacenter = "fra1"`, job: platformjobs.Fabio, vars: map[string]any{"datacenters": []string{"fra1"}}},
		{setting: `region = "europe"`, job: platformjobs.Prometheus, vars: map[string]any{"prometheus_yml": contains("client.europe.nomad")}},
		{setting: `consul { domain = "cluster.internal" }`, job: platformjobs.Prometheus, vars: map[string]any{"prometheus_yml": contains("client.dc1.cluster.internal")}},
		{setting: `nomad { namespaces = ["dev", "staging"] }`, job: platformjobs.Fabio, vars: map[string]any{"app_listeners": []map[string]any{{"namespace": "dev", "port": 10001, "public_port": 0, "tls_port": 0}, {"namespace": "staging", "port": 10002, "public_port": 0, "tls_port": 0}}}},
		{setting: `ingress { namespace = "prod" }`, job: platformjobs.Fabio, vars: map[string]any{"app_listeners": []map[string]any{{"namespace": "dev", "port": 10001, "public_port": 0, "tls_port": 0}, {"namespace": "prod", "port": 10002, "public_port": 80, "tls_port": 0}}}},
		{setting: "ingress {\n namespace = \"dev\"\n port = 8080\n}", job: platformjobs.Fabio, vars: map[string]any{"app_listeners": []map[string]any{{"namespace": "dev", "port": 10001, "public_port": 8080, "tls_port": 0}, {"namespace": "prod", "port": 10002, "public_port": 0, "tls_port": 0}}}},
		{setting: `ingress { platform = true }`, job: platformjobs.Fabio, vars: map[string]any{"public": true}},
		{setting: "ingress {\n namespace = \"prod\"\n tls {\n  cert_file = \"fullchain.pem\"\n  key_file = \"privkey.pem\"\n }\n}", job: platformjobs.Fabio, vars: map[string]any{"app_listeners": []map[string]any{{"namespace": "dev", "port": 10001, "public_port": 0, "tls_port": 0}, {"namespace": "prod", "port": 10002, "public_port": 80, "tls_port": 443}}}},
		{setting: `pki { leaf_ttl = "72h" }`, job: platformjobs.Prometheus, vars: map[string]any{"rules": nil}},
		{setting: `jobs { driver = "raw_exec" }`, job: platformjobs.NodeExporter, vars: map[string]any{"driver": "raw_exec", "binary": contains("prometheus-node-exporter")}},

		{setting: `jobs { fabio { enabled = false } }`, job: platformjobs.Fabio, absent: true},
		{setting: `jobs { fabio { image = "fabiolb/fabio:x" } }`, job: platformjobs.Fabio, vars: map[string]any{"image": "fabiolb/fabio:x"}},
		{setting: `jobs { fabio { cpu = 7 } }`, job: platformjobs.Fabio, vars: map[string]any{"cpu": 7}},
		{setting: `jobs { fabio { memory = 77 } }`, job: platformjobs.Fabio, vars: map[string]any{"memory": 77}},

		{setting: `jobs { prometheus { enabled = false } }`, job: platformjobs.Prometheus, absent: true},
		{setting: `jobs { prometheus { image = "prom/prometheus:x" } }`, job: platformjobs.Prometheus, vars: map[string]any{"image": "prom/prometheus:x"}},
		{setting: `jobs { prometheus { count = 2 } }`, job: platformjobs.Prometheus, vars: map[string]any{"count": 2}},
		{setting: `jobs { prometheus { cpu = 7 } }`, job: platformjobs.Prometheus, vars: map[string]any{"cpu": 7}},
		{setting: `jobs { prometheus { memory = 77 } }`, job: platformjobs.Prometheus, vars: map[string]any{"memory": 77}},

		{setting: `jobs { alertmanager { enabled = false } }`, job: platformjobs.Prometheus, vars: map[string]any{"alertmanager_enabled": false}},
		{setting: `jobs { alertmanager { image = "prom/alertmanager:x" } }`, job: platformjobs.Prometheus, vars: map[string]any{"alertmanager_image": "prom/alertmanager:x"}},
		{setting: `jobs { alertmanager { cpu = 7 } }`, job: platformjobs.Prometheus, vars: map[string]any{"alertmanager_cpu": 7}},
		{setting: `jobs { alertmanager { memory = 77 } }`, job: platformjobs.Prometheus, vars: map[string]any{"alertmanager_memory": 77}},

		{setting: `jobs { grafana { enabled = false } }`, job: platformjobs.Grafana, absent: true},
		{setting: `jobs { grafana { image = "grafana/grafana:x" } }`, job: platformjobs.Grafana, vars: map[string]any{"image": "grafana/grafana:x"}},
		{setting: `jobs { grafana { count = 2 } }`, job: platformjobs.Grafana, vars: map[string]any{"count": 2}},
		{setting: `jobs { grafana { cpu = 7 } }`, job: platformjobs.Grafana, vars: map[string]any{"cpu": 7}},
		{setting: `jobs { grafana { memory = 77 } }`, job: platformjobs.Grafana, vars: map[string]any{"memory": 77}},

		{setting: `jobs { node_exporter { enabled = false } }`, job: platformjobs.NodeExporter, absent: true},
		{setting: `jobs { node_exporter { image = "prom/node-exporter:x" } }`, job: platformjobs.NodeExporter, vars: map[string]any{"image": "prom/node-exporter:x"}},
		{setting: `jobs { node_exporter { cpu = 7 } }`, job: platformjobs.NodeExporter, vars: map[string]any{"cpu": 7}},
		{setting: `jobs { node_exporter { memory = 77 } }`, job: platformjobs.NodeExporter, vars: map[string]any{"memory": 77}},

		{setting: `monitoring { retention = "30d" }`, job: platformjobs.Prometheus, vars: map[string]any{"retention": "30d"}},
		{setting: `monitoring { scrape_interval = "10s" }`, job: platformjobs.Prometheus, vars: map[string]any{"prometheus_yml": contains(`scrape_interval: "10s"`)}},
		{setting: `monitoring { scrape_interval = "10s" }`, job: platformjobs.Grafana, vars: map[string]any{"scrape_interval": "10s"}},
		{setting: `monitoring { alert_webhook_url = "https://hooks.example.com/x" }`, job: platformjobs.Prometheus, vars: map[string]any{"alertmanager_yml": contains("https://hooks.example.com/x")}},
		{setting: `monitoring { dashboards_dir = "dashboards" }`, job: platformjobs.Grafana, vars: map[string]any{"dashboards": nil}},

		{setting: `gitlab_runner { url = "https://gitlab.acme.example" }`, job: platformjobs.GitLabRunner, vars: map[string]any{"gitlab_url": "https://gitlab.acme.example"}},
		{setting: `gitlab_runner { executor = "shell" }`, job: platformjobs.GitLabRunner, vars: map[string]any{"executor": "shell"}},
		{setting: `gitlab_runner { concurrent = 5 }`, job: platformjobs.GitLabRunner, vars: map[string]any{"concurrent": 5}},
		{setting: `gitlab_runner { image = "debian:12" }`, job: platformjobs.GitLabRunner, vars: map[string]any{"job_image": "debian:12"}},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			src := configWith(tc.setting, docker, runner)
			got := wantedFor(t, base+src)
			v, ok := got[tc.job]
			if tc.absent {
				if ok {
					t.Errorf("job %s is still submitted", tc.job)
				}
				return
			}
			if !ok {
				t.Fatalf("job %s is not submitted", tc.job)
			}
			for name, want := range tc.vars {
				switch want := want.(type) {
				case nil: // any change
					if reflect.DeepEqual(v[name], def[tc.job][name]) {
						t.Errorf("%s: variable %s did not change", tc.job, name)
					}
				case contains:
					text := fmt.Sprint(v[name])
					if !strings.Contains(text, string(want)) || strings.Contains(fmt.Sprint(def[tc.job][name]), string(want)) {
						t.Errorf("%s: variable %s does not newly contain %q:\n%s", tc.job, name, want, text)
					}
				default:
					if !reflect.DeepEqual(v[name], want) || reflect.DeepEqual(def[tc.job][name], want) {
						t.Errorf("%s: variable %s = %#v (default %#v), want %#v", tc.job, name, v[name], def[tc.job][name], want)
					}
				}
			}
		})
	}
}

// With the docker driver every job is passed the images tools/versions.env
// names, without any image setting (TestEverySettingChangesTheJobs checks
// that a setting replaces them); with binaries, no image at all.
func TestImagesFromVersions(t *testing.T) {
	const runner = "gitlab_runner {\n  url = \"https://gitlab.example.com\"\n  token = env(\"HOME\")\n}\n"
	images := platformjobs.Images(tools.Versions())
	for _, drv := range []string{"docker", "raw_exec"} {
		got := wantedFor(t, "provider \"local\" {}\njobs {\n  driver = \""+drv+"\"\n}\n"+runner)
		for job, vars := range images {
			if _, ok := got[job]; !ok {
				t.Fatalf("%s: job %s is not submitted", drv, job)
			}
			for name, image := range vars {
				v, ok := got[job][name]
				if drv == "docker" && v != image {
					t.Errorf("%s: %s = %#v, want %q", job, name, v, image)
				}
				if drv != "docker" && ok {
					t.Errorf("%s with %s: %s = %#v is passed", job, drv, name, v)
				}
			}
		}
	}
}

// configWith writes setting into a configuration that uses the docker
// driver and has a GitLab Runner: a jobs or gitlab_runner block is merged
// with those, anything else added as it is.
func configWith(setting, docker, runner string) string {
	if body, ok := strings.CutPrefix(setting, "jobs { "); ok {
		body = strings.TrimSuffix(body, " }")
		if strings.HasPrefix(body, "driver") {
			return "jobs {\n" + body + "\n}\n" + fmt.Sprintf(runner, "")
		}
		return "jobs {\n" + docker + body + "\n}\n" + fmt.Sprintf(runner, "")
	}
	if body, ok := strings.CutPrefix(setting, "gitlab_runner { "); ok {
		body = strings.TrimSuffix(body, " }") + "\n"
		if strings.HasPrefix(body, "url") {
			return "jobs {\n" + docker + "}\n" + "gitlab_runner {\n" + body + "token = env(\"HOME\")\n}\n"
		}
		return "jobs {\n" + docker + "}\n" + fmt.Sprintf(runner, body)
	}
	return setting + "\n" + "jobs {\n" + docker + "}\n" + fmt.Sprintf(runner, "")
}

// The addresses up prints are where Fabio listens: the clients' private
// addresses, and the public one only for what the ingress block exposes.
func TestOutputsAreWhereFabioListens(t *testing.T) {
	inv := &inventory.Inventory{Version: inventory.Version, Nodes: []inventory.Node{
		{Name: "server-1", Roles: []string{"server", "vault"}, PublicIP: "203.0.113.1", PrivateIP: "10.0.0.1"},
		{Name: "client-1", Roles: []string{"client"}, PublicIP: "203.0.113.2", PrivateIP: "10.0.0.2"},
	}}
	for _, tc := range []struct {
		ingress string
		want    map[string]string
	}{
		{"", map[string]string{
			stages.OutFabioAddr: "http://10.0.0.2:9999", stages.OutGrafanaAddr: "http://10.0.0.2:9999/grafana", stages.OutFabioUIAddr: "http://10.0.0.2:9998",
			stages.OutFabioAppAddr("dev"): "http://10.0.0.2:10001", stages.OutFabioAppAddr("prod"): "http://10.0.0.2:10002",
		}},
		{"ingress { namespace = \"prod\" }", map[string]string{
			stages.OutFabioAddr: "http://10.0.0.2:9999", stages.OutFabioUIAddr: "http://10.0.0.2:9998",
			stages.OutFabioAppAddr("dev"): "http://10.0.0.2:10001", stages.OutFabioAppAddr("prod"): "http://203.0.113.2",
		}},
		{"ingress {\n namespace = \"prod\"\n tls {\n  cert_file = \"fullchain.pem\"\n  key_file = \"privkey.pem\"\n }\n}", map[string]string{
			stages.OutFabioAppAddr("dev"): "http://10.0.0.2:10001", stages.OutFabioAppAddr("prod"): "https://203.0.113.2",
		}},
		{"ingress {\n namespace = \"prod\"\n tls {\n  port = 8443\n  cert_file = \"fullchain.pem\"\n  key_file = \"privkey.pem\"\n }\n}", map[string]string{
			stages.OutFabioAppAddr("prod"): "https://203.0.113.2:8443",
		}},
		{"ingress {\n namespace = \"dev\"\n port = 8080\n platform = true\n}", map[string]string{
			stages.OutFabioAddr: "http://203.0.113.2:9999", stages.OutGrafanaAddr: "http://203.0.113.2:9999/grafana", stages.OutFabioUIAddr: "http://10.0.0.2:9998",
			stages.OutFabioAppAddr("dev"): "http://203.0.113.2:8080", stages.OutFabioAppAddr("prod"): "http://10.0.0.2:10002",
		}},
	} {
		dir := t.TempDir()
		apitlstest.WritePair(t, dir, apitlstest.NewCA(t, "ingress").Issue(t, []string{"app.example.com"}))
		e := stagestest.Env(t, dir, filepath.Join(dir, "state"), "provider \"static\" {\n inventory = \"inventory.json\"\n}\n"+tc.ingress, nil)
		if err := setOutputs(e, &platform{cfg: e.Config, inv: inv}); err != nil {
			t.Fatal(err)
		}
		for k, want := range tc.want {
			if got := e.State.Output(k); got != want {
				t.Errorf("%q: output %s = %q, want %q", tc.ingress, k, got, want)
			}
		}
	}
}
