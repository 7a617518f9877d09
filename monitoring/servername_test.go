package monitoring

import (
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
)

// tlsConfig is a platform's prometheus.yml with every group verified by the
// name of its role: servers and client agents present different names.
func tlsConfig() PrometheusConfig {
	h := func(token, ca, name string) HTTPClient {
		return HTTPClient{TokenFile: token, CAFile: ca, ServerName: name}
	}
	consulServers := h("../secrets/consul.token", "ca/consul.pem", "server.dc1.consul")
	return PrometheusConfig{
		NomadServers:  Endpoint{Targets: []string{"127.0.1.1:4646"}, HTTP: h("../secrets/nomad.token", "ca/nomad.pem", "server.global.nomad")},
		NomadClients:  Endpoint{Targets: []string{"127.0.1.4:4646"}, HTTP: h("../secrets/nomad.token", "ca/nomad.pem", "client.global.nomad")},
		Consul:        Endpoint{Targets: []string{"127.0.1.1:8501"}, HTTP: consulServers},
		ConsulClients: Endpoint{Targets: []string{"127.0.1.4:8501", "127.0.1.5:8501"}, HTTP: h("../secrets/consul.token", "ca/consul.pem", "client.dc1.consul")},
		Vault:         Endpoint{Targets: []string{"127.0.1.1:8200"}, HTTP: h("../secrets/vault_token", "ca/vault.pem", "vault.service.consul")},
		ConsulSD:      ConsulSD{Servers: []string{"127.0.1.1:8501"}, Datacenter: "dc1", HTTP: consulServers},
	}
}

// scrapeJob returns the text of one scrape_configs entry.
func scrapeJob(t *testing.T, yml, job string) string {
	t.Helper()
	_, rest, ok := strings.Cut(yml, "  - job_name: "+quote(job)+"\n")
	if !ok {
		_, rest, ok = strings.Cut(yml, "  - job_name: "+job+"\n")
	}
	if !ok {
		t.Fatalf("no job %s in\n%s", job, yml)
	}
	if i := strings.Index(rest, "\n  - job_name:"); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

func TestPrometheusServerNames(t *testing.T) {
	yml, err := RenderPrometheus(tlsConfig())
	if err != nil {
		t.Fatal(err)
	}
	s := string(yml)
	for job, name := range map[string]string{
		"nomad-server":  "server.global.nomad",
		"nomad-client":  "client.global.nomad",
		"consul":        "server.dc1.consul",
		"consul-client": "client.dc1.consul",
		"vault":         "vault.service.consul",
	} {
		if j := scrapeJob(t, s, job); !strings.Contains(j, "tls_config:\n      ca_file:") || !strings.Contains(j, `server_name: `+quote(name)) {
			t.Errorf("job %s is not verified as %s:\n%s", job, name, j)
		}
	}
	// The client agents keep the servers' job label, which the rules and
	// dashboards select (job="consul").
	if j := scrapeJob(t, s, "consul-client"); !strings.Contains(j, "relabel_configs:") || !strings.Contains(j, "- target_label: job\n        replacement: \"consul\"") {
		t.Errorf("consul-client is not relabelled job=consul:\n%s", j)
	}
	if j := scrapeJob(t, s, "consul"); strings.Contains(j, "target_label: job") {
		t.Errorf("the consul servers' job is relabelled:\n%s", j)
	}
	// Consul service discovery talks to the servers.
	if j := scrapeJob(t, s, "consul_sd_metrics"); !strings.Contains(j, `server_name: "server.dc1.consul"`) {
		t.Errorf("consul_sd_configs do not verify the servers' name:\n%s", j)
	}
	checkConfig(t, testcluster.Bin(t, "promtool"), yml)
}

// Client agents come and go with the platform's size: they are found
// through Consul, on their own port, less the servers, which are scraped
// under the servers' name.
func TestPrometheusDiscoveredClients(t *testing.T) {
	c := tlsConfig()
	c.NomadClients.Targets, c.NomadClients.Service, c.NomadClients.Port = nil, "nomad-client", 4646
	c.NomadClients.Except = []string{"127.0.1.1", "127.0.1.2"}
	c.ConsulClients.Targets, c.ConsulClients.Service, c.ConsulClients.Port = nil, "nomad-client", 8501
	yml, err := RenderPrometheus(c)
	if err != nil {
		t.Fatal(err)
	}
	s := string(yml)
	for job, port := range map[string]string{"nomad-client": "4646", "consul-client": "8501"} {
		j := scrapeJob(t, s, job)
		for _, want := range []string{
			`services: ["nomad-client"]`,
			`replacement: "${1}:` + port + `"`,
			"target_label: __address__",
			// A client agent that joins is scraped seconds later, not 30.
			`refresh_interval: "5s"`,
		} {
			if !strings.Contains(j, want) {
				t.Errorf("job %s lacks %q:\n%s", job, want, j)
			}
		}
		if strings.Contains(j, "static_configs") {
			t.Errorf("job %s has static targets:\n%s", job, j)
		}
	}
	if j := scrapeJob(t, s, "nomad-client"); !strings.Contains(j, `regex: "127\\.0\\.1\\.1|127\\.0\\.1\\.2"`+"\n        action: drop") {
		t.Errorf("nomad-client does not leave the servers out:\n%s", j)
	}
	if j := scrapeJob(t, s, "consul-client"); !strings.Contains(j, "- target_label: job\n        replacement: \"consul\"") {
		t.Errorf("consul-client is not relabelled job=consul:\n%s", j)
	}
	checkConfig(t, testcluster.Bin(t, "promtool"), yml)

	c.NomadClients.Targets = []string{"127.0.1.4:4646"}
	if _, err := RenderPrometheus(c); err == nil || !strings.Contains(err.Error(), "both targets and a Consul service") {
		t.Errorf("targets and a service: %v, want an error that says so", err)
	}
}

func TestPrometheusBadServerName(t *testing.T) {
	c := tlsConfig()
	c.ConsulClients.HTTP.ServerName = "client.dc1.consul\"\nevil: x"
	if _, err := RenderPrometheus(c); err == nil || !strings.Contains(err.Error(), "consul clients: TLS server name") {
		t.Errorf("a bad server name: %v", err)
	}
}
