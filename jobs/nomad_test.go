package jobs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	"github.com/platform-bootstrap/bootstrap/monitoring"
	"github.com/platform-bootstrap/bootstrap/tools"
)

// The two driver profiles every job must support.
var profiles = []string{"docker", "raw_exec"}

// jobVariables returns the variables the jobs stage would pass: the
// monitoring artifacts rendered, binaries from ./bin for raw_exec.
func jobVariables(t *testing.T, name, driver string, extra Variables) Variables {
	t.Helper()
	bin := filepath.Join(testcluster.RepoRoot(), "bin")
	v := Variables{"driver": driver}
	if driver == "docker" {
		for k, image := range Images(tools.Versions())[name] {
			v[k] = image
		}
	} else {
		v["binary"] = filepath.Join(bin, map[string]string{
			Fabio:        "fabio",
			Prometheus:   "prometheus",
			Grafana:      "grafana",
			NodeExporter: "prometheus-node-exporter",
			GitLabRunner: "gitlab-runner",
		}[name])
	}
	switch name {
	case Prometheus:
		yml, err := monitoring.RenderPrometheus(monitoring.PrometheusConfig{
			NomadServers: monitoring.Endpoint{Targets: []string{"127.0.1.1:4646"}, HTTP: monitoring.HTTPClient{TokenFile: PrometheusNomadTokenFile, CAFile: PrometheusCAFile("nomad")}},
			Consul:       monitoring.Endpoint{Targets: []string{"127.0.1.1:8501"}, HTTP: monitoring.HTTPClient{TokenFile: PrometheusConsulTokenFile, CAFile: PrometheusCAFile("consul")}},
			Vault:        monitoring.Endpoint{Targets: []string{"127.0.1.1:8200"}, HTTP: monitoring.HTTPClient{TokenFile: PrometheusVaultTokenFile, CAFile: PrometheusCAFile("vault")}},
			ConsulSD:     monitoring.ConsulSD{Servers: []string{"127.0.1.4:8501"}, HTTP: monitoring.HTTPClient{TokenFile: PrometheusConsulTokenFile, CAFile: PrometheusCAFile("consul")}},
		})
		if err != nil {
			t.Fatal(err)
		}
		rules, err := monitoring.RenderRules(monitoring.RulesConfig{CertExpiry: monitoring.CertExpiryFor(24 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		am, err := monitoring.RenderAlertmanager(monitoring.AlertmanagerConfig{WebhookURL: "https://hooks.example.com/x"})
		if err != nil {
			t.Fatal(err)
		}
		v["prometheus_yml"] = string(yml)
		v["rules"] = rules
		v["alertmanager_yml"] = string(am)
		v["ca_pems"] = map[string]string{"nomad": "-----BEGIN CERTIFICATE-----\n...\n", "consul": "x", "vault": "y"}
		if driver != "docker" {
			// Upstream Alertmanager: Debian's reads its templates from
			// /usr/share/prometheus/alertmanager, which only its package installs.
			v["alertmanager_binary"] = filepath.Join(bin, "alertmanager")
		}
	case Grafana:
		v["datasources_yml"] = string(monitoring.GrafanaDatasources())
		v["dashboards_yml"] = string(monitoring.GrafanaDashboardProvider())
		v["dashboards"] = monitoring.Dashboards()
		v["homepath"] = filepath.Join(bin, "grafana-home")
	case GitLabRunner:
		v["gitlab_url"] = "https://gitlab.example.com"
	case Fabio:
		v["consul_ca_pem"] = "-----BEGIN CERTIFICATE-----\n...\n"
	}
	for k, x := range extra {
		v[k] = x
	}
	return v
}

// parse parses a job through the Nomad server, as the jobs stage does.
func parse(t *testing.T, c *nomadapi.Client, name string, vars Variables) (*nomadapi.Job, error) {
	t.Helper()
	src, err := File(name)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := vars.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return c.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{JobHCL: src, Variables: enc, Canonicalize: true})
}

// TestJobsOnNomad runs every test that needs the real platform on one
// shared environment.
func TestJobsOnNomad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul, Vault and Nomad")
	}
	e := startEnv(t)
	t.Run("validate and plan", func(t *testing.T) { testValidateAndPlan(t, e.nomad) })
	t.Run("bad variables", func(t *testing.T) { testBadVariables(t, e.nomad) })
	t.Run("gitlab-runner config", func(t *testing.T) { testRunnerConfig(t, e) })
	t.Run("settings change the job", func(t *testing.T) { testSettingsChangeJob(t, e.nomad) })
	t.Run("run", func(t *testing.T) { testRun(t, e) })
}

// Every job, in both driver profiles, parses, validates and plans on a real
// Nomad server: in the raw_exec profile every group can be placed.
func testValidateAndPlan(t *testing.T, c *nomadapi.Client) {
	type variant struct {
		name, driver string
		extra        Variables
	}
	var variants []variant
	for _, name := range Names() {
		for _, driver := range profiles {
			variants = append(variants, variant{name, driver, nil})
		}
	}
	// Without Vault (clusters without ACLs, throwaway tests).
	for _, name := range []string{Fabio, Prometheus, Grafana} {
		variants = append(variants, variant{name, "raw_exec", Variables{"use_vault": false}})
	}
	for _, v := range variants {
		name, driver := v.name, v.driver
		suffix := ""
		if v.extra != nil {
			suffix = "/no-vault"
		}
		t.Run(name+"/"+driver+suffix, func(t *testing.T) {
			vars := jobVariables(t, name, driver, v.extra)
			job, err := parse(t, c, name, vars)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if *job.Namespace != Namespace || *job.ID != name {
				t.Errorf("job %s in namespace %s", *job.ID, *job.Namespace)
			}
			resp, _, err := c.Jobs().Validate(job, nil)
			if err != nil {
				t.Fatalf("validate: %v", err)
			}
			if len(resp.ValidationErrors) > 0 || resp.Error != "" {
				t.Fatalf("validate: %s %v", resp.Error, resp.ValidationErrors)
			}
			if resp.Warnings != "" {
				t.Errorf("validate warnings: %s", resp.Warnings)
			}
			plan, _, err := c.Jobs().Plan(job, true, &nomadapi.WriteOptions{Namespace: Namespace})
			if err != nil {
				t.Fatalf("plan: %v", err)
			}
			if plan.Diff == nil || plan.Diff.Type != "Added" {
				t.Errorf("plan diff: %+v", plan.Diff)
			}
			for group, f := range plan.FailedTGAllocs {
				// The dev agent has no Docker engine: that, and only that,
				// keeps the docker profile from being placed.
				if driver == "docker" && len(f.ConstraintFiltered) == 1 && f.ConstraintFiltered[`missing drivers`] > 0 {
					continue
				}
				t.Errorf("group %s cannot be placed: %+v", group, f)
			}
			checkProfile(t, job, driver, vars)
			if v.extra != nil {
				for _, g := range job.TaskGroups {
					for _, task := range g.Tasks {
						if task.Vault != nil || slices.ContainsFunc(task.Templates, func(tp *nomadapi.Template) bool { return strings.Contains(*tp.EmbeddedTmpl, "secret ") }) {
							t.Errorf("task %s uses Vault with use_vault = false", task.Name)
						}
					}
				}
			}
		})
	}
}

// checkProfile checks what the profile must change in the parsed job, and
// that the files passed as variables arrive byte for byte.
func checkProfile(t *testing.T, job *nomadapi.Job, driver string, vars Variables) {
	t.Helper()
	for _, g := range job.TaskGroups {
		for _, task := range g.Tasks {
			if task.Driver != driver {
				t.Errorf("task %s: driver %s", task.Name, task.Driver)
			}
			_, image := task.Config["image"]
			_, command := task.Config["command"]
			if image != (driver == "docker") || command == (driver == "docker") {
				t.Errorf("task %s: config %v for %s", task.Name, task.Config, driver)
			}
			for _, tmpl := range task.Templates {
				dest := *tmpl.DestPath
				var want string
				switch dest {
				case "local/prometheus.yml":
					want = vars["prometheus_yml"].(string)
				case "local/alertmanager.yml":
					want = vars["alertmanager_yml"].(string)
				case "local/provisioning/datasources/platform.yml":
					want = vars["datasources_yml"].(string)
				default:
					if d, ok := strings.CutPrefix(dest, "local/dashboards/"); ok {
						want = string(vars["dashboards"].(map[string][]byte)[d])
					} else if r, ok := strings.CutPrefix(dest, "local/rules/"); ok {
						want = string(vars["rules"].(map[string][]byte)[r])
					} else {
						continue
					}
				}
				if *tmpl.EmbeddedTmpl != want {
					t.Errorf("task %s: %s differs from the variable it was given", task.Name, dest)
				}
				if *tmpl.LeftDelim != TemplateLeftDelim {
					t.Errorf("task %s: %s is written with delimiter %q", task.Name, dest, *tmpl.LeftDelim)
				}
			}
		}
		for _, s := range g.Services {
			if s.Address != "${meta.node_address}" {
				t.Errorf("service %s registers address %q", s.Name, s.Address)
			}
			if len(s.Checks) == 0 {
				t.Errorf("service %s has no check", s.Name)
			}
		}
	}
}

// Bad variables are refused by the job's own validation, with its message.
func testBadVariables(t *testing.T, c *nomadapi.Client) {
	for _, tc := range []struct {
		job  string
		vars Variables
		want string
	}{
		{NodeExporter, Variables{"driver": "podman"}, "The driver must be docker, raw_exec or exec."},
		{GitLabRunner, Variables{"gitlab_url": "gitlab.example.com"}, "The gitlab_url must be an http(s) URL"},
		{GitLabRunner, Variables{"gitlab_url": "https://gitlab.example.com", "executor": "kubernetes"}, "The executor must be docker or shell."},
		{Prometheus, Variables{"alertmanager_yml": "x"}, `Unset variable "prometheus_yml"`},
	} {
		_, err := parse(t, c, tc.job, tc.vars)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s with %v: got %v, want %q", tc.job, tc.vars, err, tc.want)
		}
	}
}

func waitUntil(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var err error
	for {
		if err = check(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The GitLab Runner cannot be built here (TOOLS-NOTES), so its job is not
// run. Its config.toml template is rendered the way Nomad would: by the
// real consul-template, against the real Vault, with the task's
// environment (node meta appears to templates as meta.<key>); the token
// comes from Vault and nothing is left unrendered.
func testRunnerConfig(t *testing.T, e *env) {
	ct := testcluster.Bin(t, "consul-template")
	job, err := parse(t, e.nomad, GitLabRunner, jobVariables(t, GitLabRunner, "raw_exec", Variables{"concurrent": 4, "executor": "docker"}))
	if err != nil {
		t.Fatal(err)
	}
	task := job.TaskGroups[0].Tasks[0]
	if len(task.Templates) != 1 || *task.Templates[0].DestPath != "secrets/config.toml" {
		t.Fatalf("templates: %+v", task.Templates)
	}
	const token = "glrt-test-1c9f"
	if _, err := e.vault.Client.Logical().Write("secret/data/general/gitlab-runner/token", map[string]any{"data": map[string]any{"token": token}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "config.toml.tpl")
	writeFile(t, in, *task.Templates[0].EmbeddedTmpl)
	cmd := exec.Command(ct, "-once", "-dry", "-vault-renew-token=false",
		"-vault-addr="+e.vault.Addr, "-vault-ssl-ca-cert="+e.vault.CACert,
		"-template="+in+":"+filepath.Join(dir, "config.toml"))
	cmd.Env = append(os.Environ(), "VAULT_TOKEN="+e.vault.Token,
		"NOMAD_PORT_metrics=25001", "NOMAD_ALLOC_DIR=/alloc", "NOMAD_ALLOC_INDEX=0", "node.unique.name=client-1", "meta.node_address="+e.ip)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("consul-template: %v\n%s", err, out)
	}
	got := string(out)
	for _, want := range []string{
		"concurrent = 4\n",
		`listen_address = "` + e.ip + `:25001"`,
		`name = "nomad-client-1-0"`,
		`url = "https://gitlab.example.com"`,
		`token = "` + token + `"`,
		`executor = "docker"`,
		`builds_dir = "/alloc/data/builds"`,
		"[runners.docker]",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("config.toml lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "{{") || strings.Contains(got, "${") {
		t.Errorf("config.toml has unrendered parts:\n%s", got)
	}
}

// The variables the jobs stage sets from platform.hcl change the job Nomad
// runs (stages/jobs.TestEverySettingChangesTheJobs checks that each setting
// reaches its variable): the parsed job differs from the default one in the
// group, task and field the setting names.
func testSettingsChangeJob(t *testing.T, c *nomadapi.Client) {
	group := func(job *nomadapi.Job, name string) *nomadapi.TaskGroup {
		for _, g := range job.TaskGroups {
			if *g.Name == name {
				return g
			}
		}
		return nil
	}
	task := func(job *nomadapi.Job, name string) *nomadapi.Task {
		for _, g := range job.TaskGroups {
			for _, tk := range g.Tasks {
				if tk.Name == name {
					return tk
				}
			}
		}
		return nil
	}
	// describe is the part of the job a setting changes, as text.
	type describe func(job *nomadapi.Job) string
	count := func(g string) describe {
		return func(job *nomadapi.Job) string {
			if tg := group(job, g); tg != nil {
				return fmt.Sprint(*tg.Count)
			}
			return "no group " + g
		}
	}
	image := func(name string) describe {
		return func(job *nomadapi.Job) string { return fmt.Sprint(task(job, name).Config["image"]) }
	}
	resources := func(name string) describe {
		return func(job *nomadapi.Job) string {
			r := task(job, name).Resources
			return fmt.Sprintf("cpu %d memory %d", *r.CPU, *r.MemoryMB)
		}
	}
	config := func(name string) describe {
		return func(job *nomadapi.Job) string { return *task(job, name).Templates[0].EmbeddedTmpl }
	}
	// redirect is the properties of the Fabio that redirects to HTTPS.
	redirect := func(job *nomadapi.Job) string {
		if tk := task(job, "redirect"); tk != nil {
			return *tk.Templates[0].EmbeddedTmpl
		}
		return "no redirect task"
	}
	// properties is the first template of group g's task: Fabio's
	// properties file.
	properties := func(g string) describe {
		return func(job *nomadapi.Job) string {
			if tg := group(job, g); tg != nil {
				return *tg.Tasks[0].Templates[0].EmbeddedTmpl
			}
			return "no group " + g
		}
	}
	constraints := func(g string) describe {
		return func(job *nomadapi.Job) string {
			var out []string
			for _, c := range group(job, g).Constraints {
				out = append(out, c.LTarget+" "+c.Operand+" "+c.RTarget)
			}
			return strings.Join(out, ", ")
		}
	}
	for _, tc := range []struct {
		job  string
		vars Variables
		what describe
		want string
	}{
		{Prometheus, Variables{"alertmanager_enabled": false}, count("alertmanager"), "no group alertmanager"},
		{Prometheus, Variables{"alertmanager_image": "prom/alertmanager:x"}, image("alertmanager"), "prom/alertmanager:x"},
		{Prometheus, Variables{"alertmanager_cpu": 7, "alertmanager_memory": 77}, resources("alertmanager"), "cpu 7 memory 77"},
		{Prometheus, Variables{"count": 2}, count("prometheus"), "2"},
		{Prometheus, Variables{"data_volume": true}, constraints("prometheus"), "${meta.data_volume} = true"},
		{Prometheus, Variables{"image": "prom/prometheus:x"}, image("prometheus"), "prom/prometheus:x"},
		{Prometheus, Variables{"cpu": 7, "memory": 77}, resources("prometheus"), "cpu 7 memory 77"},
		{Grafana, Variables{"count": 2}, count("grafana"), "2"},
		{Grafana, Variables{"image": "grafana/grafana:x"}, image("grafana"), "grafana/grafana:x"},
		{Grafana, Variables{"cpu": 7, "memory": 77}, resources("grafana"), "cpu 7 memory 77"},
		{Fabio, Variables{"image": "fabiolb/fabio:x"}, image("fabio"), "fabiolb/fabio:x"},
		{Fabio, Variables{"cpu": 7, "memory": 77}, resources("fabio"), "cpu 7 memory 77"},
		{Fabio, Variables{"public": true}, properties("fabio"), `{{ with env "meta.public_address" }},{{ . }}:9999;proto=http{{ end }}`},
		{Fabio, Variables{"app_listeners": []map[string]any{{"namespace": "prod", "port": 10002, "public_port": 80, "tls_port": 0}}}, properties("fabio-prod"),
			`proto=prometheus{{ with env "meta.public_address" }},{{ . }}:80;proto=http{{ end }}`},
		{Fabio, Variables{"app_listeners": []map[string]any{{"namespace": "prod", "port": 10002, "public_port": 80, "tls_port": 443}}}, properties("fabio-prod"),
			`proto=prometheus{{ with env "meta.public_address" }},{{ . }}:443;proto=https;cs=ingress;tlsmin=tls12{{ end }}`},
		{Fabio, Variables{"app_listeners": []map[string]any{{"namespace": "prod", "port": 10002, "public_port": 80, "tls_port": 443}}}, redirect,
			`{{ with env "meta.public_address" }},{{ . }}:80;proto=http{{ end }}`},
		{Fabio, Variables{"app_listeners": []map[string]any{{"namespace": "prod", "port": 10002, "public_port": 80, "tls_port": 8443}}}, redirect,
			`route add https / https://$host:8443/$path opts "redirect=301"`},
		{NodeExporter, Variables{"image": "prom/node-exporter:x"}, image("node-exporter"), "prom/node-exporter:x"},
		{NodeExporter, Variables{"cpu": 7, "memory": 77}, resources("node-exporter"), "cpu 7 memory 77"},
		{GitLabRunner, Variables{"job_image": "debian:12"}, config("gitlab-runner"), `image = "debian:12"`},
		{GitLabRunner, Variables{"concurrent": 5}, config("gitlab-runner"), "concurrent = 5\n"},
		{GitLabRunner, Variables{"executor": "shell"}, config("gitlab-runner"), `executor = "shell"`},
	} {
		t.Run(fmt.Sprintf("%s/%v", tc.job, tc.vars), func(t *testing.T) {
			def, err := parse(t, c, tc.job, jobVariables(t, tc.job, "docker", nil))
			if err != nil {
				t.Fatal(err)
			}
			job, err := parse(t, c, tc.job, jobVariables(t, tc.job, "docker", tc.vars))
			if err != nil {
				t.Fatal(err)
			}
			before, after := tc.what(def), tc.what(job)
			if !strings.Contains(after, tc.want) || strings.Contains(before, tc.want) {
				t.Errorf("got %q (default %q), want %q", after, before, tc.want)
			}
		})
	}
}
