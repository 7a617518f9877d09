package monitoring

import (
	"bufio"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
)

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle",instance=~"$instance"}[5m])))`:           {"node_cpu_seconds_total"},
		`(consul_autopilot_healthy{job="consul"} and on(instance) consul_server_isLeader{job="consul"} == 1) == 0`:      {"consul_autopilot_healthy", "consul_server_isLeader"},
		`sum by (code) (rate({__name__=~"http_requests_total|x",service="a"}[5m]))`:                                     nil,
		`count(up{service="node-exporter"} == 0) or vector(0)`:                                                          {"up"},
		`absent(nomad_nomad_autopilot_healthy{job="nomad-server"}) and on() count(up{job="nomad-server"} == 1) > 0`:     {"nomad_nomad_autopilot_healthy", "up"},
		`nomad_client_allocated_cpu / (nomad_client_allocated_cpu + nomad_client_unallocated_cpu) unless foo offset 5m`: {"nomad_client_allocated_cpu", "nomad_client_allocated_cpu", "nomad_client_unallocated_cpu", "foo"},
		`time() - node_load1{a="b) (c"} * 1e3`:                                                                          {"node_load1"},
	} {
		if got := MetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("MetricNames(%s) = %q, want %q", expr, got, want)
		}
	}
	used, err := UsedMetrics()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"up", "vault_core_unsealed", "nomad_client_allocs_memory_rss", "node_filesystem_avail_bytes", "consul_agent_tls_cert_expiry"} {
		if used[n] == "" {
			t.Errorf("UsedMetrics lacks %s", n)
		}
	}
}

// Every consul_* metric the dashboards and rules use is exported by a real
// Consul configured like the consul role does (Prometheus telemetry,
// no hostname prefix). The jobs package checks the others against the
// platform it runs.
func TestConsulMetricsExist(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Consul")
	}
	ip := testcluster.NewSubnet(t).IP(1)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "telemetry.hcl")
	write(t, cfg, "telemetry {\n  prometheus_retention_time = \"60s\"\n  disable_hostname = true\n}\n")
	testcluster.Start(t, "consul", testcluster.Bin(t, "consul"),
		[]string{"agent", "-dev", "-bind=" + ip, "-client=" + ip, "-config-file=" + cfg}, dir)

	used, err := UsedMetrics()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for n := range used {
		if strings.HasPrefix(n, "consul_") {
			want = append(want, n)
		}
	}
	if len(want) < 10 {
		t.Fatalf("only %d consul metrics used: %v", len(want), want)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		have, err := exposedNames("http://" + ip + ":8500/v1/agent/metrics?format=prometheus")
		var missing []string
		for _, n := range want {
			if !have[n] {
				missing = append(missing, n+" ("+used[n]+")")
			}
		}
		if err == nil && len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Consul does not export: %s (%v)", strings.Join(missing, ", "), err)
		}
		time.Sleep(time.Second)
	}
}

// exposedNames returns the metric names of a Prometheus exposition.
func exposedNames(url string) (map[string]bool, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names, sc.Err()
}
