package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
)

// fullConfig uses every feature of the template: TLS with client
// certificates, token files, external labels, static node exporters.
func fullConfig() PrometheusConfig {
	tls := HTTPClient{TokenFile: "../secrets/nomad.token", CAFile: "ca/nomad.pem", ServerName: "server.global.nomad"}
	return PrometheusConfig{
		ScrapeInterval: "10s",
		ExternalLabels: map[string]string{"platform": "local", "region": "global"},
		NomadServers:   Endpoint{Targets: []string{"127.0.1.1:4646", "127.0.1.2:4646"}, HTTP: tls},
		NomadClients:   Endpoint{Targets: []string{"127.0.1.4:4646"}, HTTP: HTTPClient{TokenFile: "../secrets/nomad.token", CAFile: "ca/nomad.pem", ServerName: "client.global.nomad"}},
		Consul: Endpoint{Targets: []string{"127.0.1.1:8501"}, HTTP: HTTPClient{
			TokenFile: "../secrets/consul.token", CAFile: "ca/consul.pem", CertFile: "../secrets/client.pem", KeyFile: "../secrets/client-key.pem",
		}},
		Vault:         Endpoint{Targets: []string{"127.0.1.1:8200"}, HTTP: HTTPClient{TokenFile: "../secrets/vault_token", CAFile: "ca/vault.pem"}},
		NodeExporters: []NodeTarget{{Node: "server-1", Target: "10.0.0.9:9100"}},
		ConsulSD:      ConsulSD{Servers: []string{"127.0.1.1:8501", "127.0.1.2:8501", "127.0.1.3:8501"}, Datacenter: "dc1", HTTP: HTTPClient{TokenFile: "../secrets/consul.token", CAFile: "ca/consul.pem"}},
		AppNamespaces: []string{"dev", "prod"},
	}
}

// checkConfig writes prometheus.yml with the files it refers to into a
// task-like directory (local/ and secrets/) and runs promtool check config.
func checkConfig(t *testing.T, promtool string, yml []byte) string {
	t.Helper()
	task := t.TempDir()
	local := filepath.Join(task, "local")
	for _, f := range []string{"ca/nomad.pem", "ca/consul.pem", "ca/vault.pem", "../secrets/nomad.token", "../secrets/consul.token", "../secrets/vault_token", "../secrets/client.pem", "../secrets/client-key.pem"} {
		write(t, filepath.Join(local, f), "placeholder\n")
	}
	rules, err := RenderRules(RulesConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range rules {
		write(t, filepath.Join(local, "rules", name), string(b))
	}
	path := filepath.Join(local, "prometheus.yml")
	write(t, path, string(yml))
	out, err := exec.Command(promtool, "check", "config", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s\n--- prometheus.yml:\n%s", err, out, yml)
	}
	return string(out)
}

func TestPrometheusConfigPassesPromtool(t *testing.T) {
	promtool := testcluster.Bin(t, "promtool")
	for name, c := range map[string]PrometheusConfig{
		"full": fullConfig(),
		// Only Consul discovery, over plain HTTP, no token: a cluster without
		// TLS or ACLs, as in the tests that run the jobs.
		"minimal": {ConsulSD: ConsulSD{Servers: []string{"127.0.0.1:8500"}, Scheme: "http"}},
		"static alertmanagers": {
			ConsulSD:      ConsulSD{Servers: []string{"127.0.0.1:8500"}, Scheme: "http"},
			Alertmanagers: []string{"127.0.1.4:9093", "127.0.1.5:9093"},
			NomadServers:  Endpoint{Targets: []string{"127.0.0.1:4646"}, Scheme: "http"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			yml, err := RenderPrometheus(c)
			if err != nil {
				t.Fatal(err)
			}
			out := checkConfig(t, promtool, yml)
			// promtool counts the rule files it checked: all of them.
			rules, _ := RenderRules(RulesConfig{})
			for n := range rules {
				if !strings.Contains(out, n) {
					t.Errorf("promtool did not check rule file %s:\n%s", n, out)
				}
			}
		})
	}
}

// The rendered file is what the jobs and the dissertation's relabeling
// need, beyond being valid.
func TestPrometheusConfigContent(t *testing.T) {
	yml, err := RenderPrometheus(fullConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := string(yml)
	for _, want := range []string{
		`job_name: "nomad-server"`, `job_name: "nomad-client"`, `job_name: "consul"`, `job_name: "vault"`,
		`metrics_path: "/v1/metrics"`, `metrics_path: "/v1/agent/metrics"`, `metrics_path: "/v1/sys/metrics"`,
		`format: [prometheus]`,
		`credentials_file: "../secrets/consul.token"`, `credentials_file: "../secrets/vault_token"`,
		`ca_file: "ca/nomad.pem"`, `server_name: "server.global.nomad"`, `server_name: "client.global.nomad"`,
		`cert_file: "../secrets/client.pem"`,
		"job_name: consul_sd_metrics",
		"regex: (.*)-sidecar-proxy\n        action: drop",
		"regex: .*,prometheus,.*\n        action: keep",
		"target_label: service",
		"__meta_consul_service_metadata_metrics_path",
		`services: ["alertmanager"]`,
		`path_prefix: "/alertmanager"`,
		`platform: "local"`,
		`- "rules/*.yml"`,
		`scrape_interval: "10s"`, `evaluation_interval: "10s"`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("prometheus.yml lacks %q:\n%s", want, s)
		}
	}
	// Without targets a group is left out; without alertmanagers they are
	// discovered.
	yml, err = RenderPrometheus(PrometheusConfig{ConsulSD: ConsulSD{Servers: []string{"127.0.0.1:8500"}}, Alertmanagers: []string{"127.0.0.1:9093"}})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(yml); strings.Contains(s, "nomad-server") || strings.Contains(s, `job_name: "vault"`) || strings.Contains(s, `services: ["alertmanager"]`) {
		t.Errorf("unexpected parts in\n%s", s)
	}
}

func TestPrometheusConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		c    PrometheusConfig
		want string
	}{
		"no consul":      {PrometheusConfig{}, "no Consul server for service discovery"},
		"bad target":     {PrometheusConfig{ConsulSD: ConsulSD{Servers: []string{"c:8500"}}, Vault: Endpoint{Targets: []string{"vault.example.com"}}}, `vault: target "vault.example.com" is not host:port`},
		"bad interval":   {PrometheusConfig{ConsulSD: ConsulSD{Servers: []string{"c:8500"}}, ScrapeInterval: "15"}, `scrape interval "15" is not a duration`},
		"bad scheme":     {PrometheusConfig{ConsulSD: ConsulSD{Servers: []string{"c:8500"}, Scheme: "ftp"}}, `scheme "ftp"`},
		"bad label":      {PrometheusConfig{ConsulSD: ConsulSD{Servers: []string{"c:8500"}}, ExternalLabels: map[string]string{"a-b": "x"}}, `external label name "a-b"`},
		"bad tag":        {PrometheusConfig{ConsulSD: ConsulSD{Servers: []string{"c:8500"}, Tag: "a b"}}, `service tag "a b"`},
		"bad am prefix":  {PrometheusConfig{ConsulSD: ConsulSD{Servers: []string{"c:8500"}}, AlertmanagerPathPrefix: "am"}, `must start with /`},
		"bad am address": {PrometheusConfig{ConsulSD: ConsulSD{Servers: []string{"c:8500"}}, Alertmanagers: []string{"http://am:9093/"}}, `alertmanagers: target`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := RenderPrometheus(tc.c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// Values end up quoted: a hostile value cannot add YAML keys.
func TestPrometheusConfigQuotes(t *testing.T) {
	yml, err := RenderPrometheus(PrometheusConfig{
		ConsulSD:       ConsulSD{Servers: []string{"127.0.0.1:8500"}, HTTP: HTTPClient{TokenFile: "x\"\n  evil: true"}},
		ExternalLabels: map[string]string{"a": "b\nc: d"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(yml), "\n  evil: true") || strings.Contains(string(yml), "\nc: d") {
		t.Fatalf("a value escaped its quotes:\n%s", yml)
	}
}

func TestRulesPassPromtool(t *testing.T) {
	promtool := testcluster.Bin(t, "promtool")
	dir := t.TempDir()
	rules, err := RenderRules(RulesConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for name, b := range rules {
		p := filepath.Join(dir, "rules", name)
		write(t, p, string(b))
		paths = append(paths, p)
	}
	sort.Strings(paths)
	if out, err := exec.Command(promtool, append([]string{"check", "rules"}, paths...)...).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	// The unit tests: the main alerts fire, and stay quiet, when they should.
	b, err := os.ReadFile("testdata/alerts_test.yml")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "alerts_test.yml"), string(b))
	cmd := exec.Command(promtool, "test", "rules", "alerts_test.yml")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// Every alert the issue asks for exists, and every alert has a severity
// and a summary.
func TestRulesCoverage(t *testing.T) {
	rules, err := RenderRules(RulesConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, b := range rules {
		all.Write(b)
	}
	for _, alert := range []string{
		"InstanceDown", "NomadNoLeader", "NomadServerUnhealthy", "ConsulNoLeader", "ConsulServerUnhealthy",
		"VaultSealed", "PKICertificateExpiring", "NomadAllocationsFailed", "NomadAllocationsQueued",
		"NodeCPUHigh", "NodeMemoryHigh", "NodeDiskFull",
	} {
		if !strings.Contains(all.String(), "alert: "+alert+"\n") {
			t.Errorf("no alert %s", alert)
		}
	}
	alerts := strings.Count(all.String(), "- alert: ")
	if n := strings.Count(all.String(), "severity: "); n != alerts {
		t.Errorf("%d alerts but %d severities", alerts, n)
	}
	if n := strings.Count(all.String(), "summary: "); n != alerts {
		t.Errorf("%d alerts but %d summaries", alerts, n)
	}
}

func TestRulesThresholds(t *testing.T) {
	rules, err := RenderRules(RulesConfig{CertExpiry: CertExpiryFor(24 * time.Hour), CPUPercent: 75})
	if err != nil {
		t.Fatal(err)
	}
	// 5% of 24h.
	if !strings.Contains(string(rules["pki.yml"]), "consul_agent_tls_cert_expiry{job=\"consul\"} < 4320\n") {
		t.Errorf("pki.yml:\n%s", rules["pki.yml"])
	}
	if !strings.Contains(string(rules["nodes.yml"]), `> 75`) || !strings.Contains(string(rules["nodes.yml"]), "Less than 10% of the node's memory") {
		t.Errorf("nodes.yml:\n%s", rules["nodes.yml"])
	}
	if got := CertExpiryFor(365 * 24 * time.Hour); got != 72*time.Hour {
		t.Errorf("CertExpiryFor(1y) = %s, want 72h", got)
	}
	if _, err := RenderRules(RulesConfig{DiskPercent: 101}); err == nil {
		t.Error("a 101% threshold was accepted")
	}
}

func TestAlertmanagerConfigPassesAmtool(t *testing.T) {
	amtool := testcluster.Bin(t, "amtool")
	for name, tc := range map[string]struct {
		c    AlertmanagerConfig
		want string
	}{
		"webhook": {AlertmanagerConfig{WebhookURL: "https://hooks.example.com/alerts"}, "- url: \"https://hooks.example.com/alerts\""},
		"none":    {AlertmanagerConfig{}, `receiver: "null"`},
	} {
		t.Run(name, func(t *testing.T) {
			yml, err := RenderAlertmanager(tc.c)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(yml), tc.want) {
				t.Errorf("alertmanager.yml lacks %q:\n%s", tc.want, yml)
			}
			p := filepath.Join(t.TempDir(), "alertmanager.yml")
			write(t, p, string(yml))
			out, err := exec.Command(amtool, "check-config", p).CombinedOutput()
			if err != nil {
				t.Fatalf("amtool check-config: %v\n%s\n--- alertmanager.yml:\n%s", err, out, yml)
			}
			if want := "1 receivers"; !strings.Contains(string(out), want) {
				t.Errorf("amtool: want %q in\n%s", want, out)
			}
		})
	}
}

func TestAlertmanagerConfigErrors(t *testing.T) {
	_, err := RenderAlertmanager(AlertmanagerConfig{WebhookURL: "hooks.example.com/secret-token"})
	if err == nil || strings.Contains(err.Error(), "secret-token") {
		t.Errorf("got %v, want an error that does not echo the URL", err)
	}
	if _, err := RenderAlertmanager(AlertmanagerConfig{RepeatInterval: "often"}); err == nil {
		t.Error("a bad repeat interval was accepted")
	}
}

// dashboardExprs returns every PromQL expression of a dashboard (panel
// targets and query variables), with Grafana's variables replaced by
// values that keep the expression's shape.
func dashboardExprs(t *testing.T, d Dashboard) []string {
	t.Helper()
	var exprs []string
	for _, p := range d.AllPanels() {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*[a-zA-Z_]+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
		}
		exprs = append(exprs, m[1])
	}
	r := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
		"$namespace", "default", "$instance", "127.0.0.1:9100", "$service", "web")
	for i, e := range exprs {
		exprs[i] = r.Replace(e)
		if strings.Contains(exprs[i], "$") {
			t.Errorf("%s: unknown variable in %q", d.UID, e)
		}
	}
	return exprs
}

func TestDashboards(t *testing.T) {
	ds := Dashboards()
	if len(ds) < 5 {
		t.Fatalf("%d dashboards, want nomad, nodes, consul, vault and service", len(ds))
	}
	uids := map[string]bool{}
	for name, b := range ds {
		t.Run(name, func(t *testing.T) {
			if err := CheckDashboard(b); err != nil {
				t.Fatal(err)
			}
			var d Dashboard
			if err := json.Unmarshal(b, &d); err != nil {
				t.Fatal(err)
			}
			if d.UID == "" || uids[d.UID] {
				t.Errorf("uid %q is empty or used twice", d.UID)
			}
			uids[d.UID] = true
			if d.SchemaVersion == 0 {
				t.Error("no schemaVersion")
			}
			queries := 0
			for _, p := range d.AllPanels() {
				if p.Type == "row" {
					continue
				}
				if p.Datasource == nil || p.Datasource.UID != DatasourceUID || p.Datasource.Type != "prometheus" {
					t.Errorf("panel %q: datasource %+v is not the provisioned Prometheus", p.Title, p.Datasource)
				}
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
				for _, tg := range p.Targets {
					queries++
					if tg.Expr == "" || tg.RefID == "" {
						t.Errorf("panel %q: empty query or refId", p.Title)
					}
					if tg.Datasource == nil || tg.Datasource.UID != DatasourceUID {
						t.Errorf("panel %q: query datasource %+v", p.Title, tg.Datasource)
					}
				}
			}
			for _, v := range d.Templating.List {
				if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != DatasourceUID) {
					t.Errorf("variable %s: datasource %+v", v.Name, v.Datasource)
				}
			}
			if queries < 5 {
				t.Errorf("only %d queries", queries)
			}
		})
	}
}

// Every PromQL expression of every dashboard parses: they go into a
// rules file of recording rules, which promtool parses.
func TestDashboardQueriesParse(t *testing.T) {
	promtool := testcluster.Bin(t, "promtool")
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	n := 0
	for name, raw := range Dashboards() {
		var d Dashboard
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		for _, e := range dashboardExprs(t, d) {
			n++
			q, _ := json.Marshal(e)
			fmt.Fprintf(&b, "      - record: dashboard_query_%d # %s\n        expr: %s\n", n, name, q)
		}
	}
	p := filepath.Join(t.TempDir(), "dashboards.yml")
	write(t, p, b.String())
	out, err := exec.Command(promtool, "check", "rules", p).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("SUCCESS: %d rules found", n); !strings.Contains(string(out), want) {
		t.Fatalf("want %q in\n%s", want, out)
	}
}

// promtool must fail on a broken expression, or the check above proves
// nothing.
func TestDashboardQueryCheckCatchesErrors(t *testing.T) {
	promtool := testcluster.Bin(t, "promtool")
	p := filepath.Join(t.TempDir(), "bad.yml")
	write(t, p, "groups:\n  - name: x\n    rules:\n      - record: x\n        expr: \"sum by (a (up)\"\n")
	if out, err := exec.Command(promtool, "check", "rules", p).CombinedOutput(); err == nil {
		t.Fatalf("promtool accepted a broken expression:\n%s", out)
	}
}

func TestReadDashboardsDir(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "ok.json"), `{"title": "Mine", "uid": "mine", "panels": []}`)
	got, err := ReadDashboardsDir(dir)
	if err != nil || len(got) != 1 {
		t.Fatalf("got %d dashboards, %v", len(got), err)
	}
	write(t, filepath.Join(dir, "bad.json"), `{"panels": []}`)
	write(t, filepath.Join(dir, "worse.json"), `{`)
	_, err = ReadDashboardsDir(dir)
	if err == nil || !strings.Contains(err.Error(), "bad.json: no title") || !strings.Contains(err.Error(), "worse.json") {
		t.Fatalf("got %v", err)
	}
	if _, err := ReadDashboardsDir(t.TempDir()); err == nil {
		t.Error("an empty dir was accepted")
	}
}

func TestGrafanaProvisioning(t *testing.T) {
	ds := string(GrafanaDatasources())
	for _, want := range []string{"uid: " + DatasourceUID, "type: prometheus", "url: ${PROMETHEUS_URL}", "isDefault: true"} {
		if !strings.Contains(ds, want) {
			t.Errorf("datasources.yml lacks %q", want)
		}
	}
	if p := string(GrafanaDashboardProvider()); !strings.Contains(p, "path: ${GRAFANA_DASHBOARDS_DIR}") || !strings.Contains(p, "type: file") {
		t.Errorf("dashboards.yml:\n%s", p)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
