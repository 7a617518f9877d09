package jobs

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
	"github.com/platform-bootstrap/bootstrap/monitoring"
)

// testRun runs the raw_exec profile of the platform jobs for real, with
// their secrets from Vault, and checks what a user would: Prometheus
// scrapes node-exporter, Nomad and the services it discovers in Consul, an
// alert travels to the webhook through the Alertmanager it discovered,
// Fabio routes /prometheus, and Grafana (when bin/grafana exists) serves the
// dashboards with a working datasource.
func testRun(t *testing.T, e *env) {
	bin := filepath.Join(testcluster.RepoRoot(), "bin")
	for _, b := range []string{"prometheus", "alertmanager", "prometheus-node-exporter", "fabio"} {
		testcluster.Bin(t, b)
	}
	hook := startWebhook(t, e.consul.Subnet.IP(3))

	consulHostPort := strings.TrimPrefix(e.consul.HTTPAddrs[0], "http://")
	vaultHostPort := strings.TrimPrefix(e.vault.Addr, "https://")
	promYML, err := monitoring.RenderPrometheus(monitoring.PrometheusConfig{
		ScrapeInterval: "2s",
		NomadServers:   monitoring.Endpoint{Targets: []string{e.ip + ":4646"}, Scheme: "http", HTTP: monitoring.HTTPClient{TokenFile: PrometheusNomadTokenFile}},
		NomadClients:   monitoring.Endpoint{Targets: []string{e.ip + ":4646"}, Scheme: "http", HTTP: monitoring.HTTPClient{TokenFile: PrometheusNomadTokenFile}},
		Vault:          monitoring.Endpoint{Targets: []string{vaultHostPort}, HTTP: monitoring.HTTPClient{TokenFile: PrometheusVaultTokenFile, CAFile: PrometheusCAFile("vault")}},
		ConsulSD:       monitoring.ConsulSD{Servers: []string{consulHostPort}, Scheme: "http", HTTP: monitoring.HTTPClient{TokenFile: PrometheusConsulTokenFile}},
	})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := monitoring.RenderRules(monitoring.RulesConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// An alert that fires at once, to follow it to the webhook.
	rules["test.yml"] = []byte("groups:\n  - name: test\n    rules:\n      - alert: TestAlwaysFiring\n        expr: vector(1)\n        labels:\n          severity: info\n")
	amYML, err := monitoring.RenderAlertmanager(monitoring.AlertmanagerConfig{WebhookURL: hook.url, GroupWait: "1s", GroupInterval: "5s"})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(e.vault.CACert)
	if err != nil {
		t.Fatal(err)
	}

	submit := map[string]Variables{
		NodeExporter: jobVariables(t, NodeExporter, "raw_exec", nil),
		Fabio:        jobVariables(t, Fabio, "raw_exec", Variables{"consul_addr": e.consul.HTTPAddrs[0], "consul_ca_pem": ""}),
		Prometheus: jobVariables(t, Prometheus, "raw_exec", Variables{
			"prometheus_yml":   promYML,
			"rules":            rules,
			"alertmanager_yml": amYML,
			"ca_pems":          map[string]string{"vault": string(caPEM)},
			"resend_delay":     "2s",
			"data_dir":         filepath.Join(t.TempDir(), "tsdb"),
		}),
	}
	grafana := haveBin(filepath.Join(bin, "grafana")) && haveBin(filepath.Join(bin, "grafana-home", "conf", "defaults.ini"))
	if grafana {
		submit[Grafana] = jobVariables(t, Grafana, "raw_exec", Variables{"scrape_interval": "2s"})
	} else if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
		t.Error("bin/grafana is missing: run make tools")
	} else {
		t.Log("bin/grafana is not built yet: Grafana is validated and planned, not run")
	}
	t.Cleanup(func() { stopJobs(t, e.nomad, slices.Collect(maps.Keys(submit))) })
	for name, vars := range submit {
		job, err := parse(t, e.nomad, name, vars)
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		if _, _, err := e.nomad.Jobs().Register(job, &nomadapi.WriteOptions{Namespace: Namespace}); err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
	}

	// Every service is registered with node_address and passes its checks.
	services := []string{"node-exporter", "fabio", "fabio-metrics", "prometheus", "alertmanager"}
	if grafana {
		services = append(services, "grafana")
	}
	addrs := map[string]string{}
	waitUntil(t, 3*time.Minute, "every platform service passing in Consul", func() error {
		for _, s := range services {
			entries, _, err := e.consul.Client.Health().Service(s, "", true, nil)
			if err != nil {
				return err
			}
			if len(entries) != 1 {
				return fmt.Errorf("%s: %d passing instances%s%s%s", s, len(entries), checkOutputs(e, s), allocProblems(e.nomad), taskLogs(e, s))
			}
			if a := entries[0].Service.Address; a != e.ip {
				t.Fatalf("%s registered with address %s, want the node_address %s", s, a, e.ip)
			}
			addrs[s] = net.JoinHostPort(entries[0].Service.Address, fmt.Sprint(entries[0].Service.Port))
		}
		return nil
	})
	prom := "http://" + addrs["prometheus"] + "/prometheus"

	t.Run("prometheus scrapes", func(t *testing.T) {
		want := []string{
			"consul_sd_metrics/node-exporter", "consul_sd_metrics/prometheus", "consul_sd_metrics/alertmanager",
			"consul_sd_metrics/fabio-metrics", "nomad-server/", "nomad-client/",
		}
		if grafana {
			want = append(want, "consul_sd_metrics/grafana")
		}
		var targets []target
		waitUntil(t, 90*time.Second, "every target up", func() error {
			var resp struct {
				Data struct {
					ActiveTargets []target `json:"activeTargets"`
				} `json:"data"`
			}
			if err := getJSON(prom+"/api/v1/targets?state=active", &resp); err != nil {
				return err
			}
			targets = resp.Data.ActiveTargets
			up := map[string]bool{}
			for _, tg := range targets {
				if tg.Health == "up" {
					up[tg.Labels["job"]+"/"+tg.Labels["service"]] = true
				}
			}
			for _, w := range want {
				if !up[w] {
					return fmt.Errorf("%s is not up: %+v", w, targets)
				}
			}
			return nil
		})
		for _, tg := range targets {
			t.Logf("target %s %s %s %s", tg.Labels["job"], tg.Labels["service"], tg.ScrapeURL, tg.Health)
		}
		// Vault is scraped with the task's own Vault token: it is up only if
		// the workload policy may read sys/metrics.
		for _, tg := range targets {
			if tg.Labels["job"] == "vault" && tg.Health != "up" {
				t.Logf("vault target is %s: %s (the nomad-workloads policy does not grant sys/metrics)", tg.Health, tg.LastError)
			}
		}
		// A query for node CPU returns a value for the node once there are
		// two samples to take a rate of.
		waitUntil(t, 30*time.Second, "a node CPU value", func() error {
			var res struct {
				Data struct {
					Result []struct {
						Metric map[string]string `json:"metric"`
					} `json:"result"`
				} `json:"data"`
			}
			if err := getJSON(prom+"/api/v1/query?query="+url.QueryEscape(`sum by (instance) (rate(node_cpu_seconds_total[1m]))`), &res); err != nil {
				return err
			}
			if len(res.Data.Result) != 1 || res.Data.Result[0].Metric["instance"] != e.ip+":9100" {
				return fmt.Errorf("node CPU: %+v", res.Data.Result)
			}
			return nil
		})
		// Every rule file was loaded.
		var rulesResp struct {
			Data struct {
				Groups []struct {
					Name string `json:"name"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := getJSON(prom+"/api/v1/rules", &rulesResp); err != nil {
			t.Fatal(err)
		}
		var groups []string
		for _, g := range rulesResp.Data.Groups {
			groups = append(groups, g.Name)
		}
		slices.Sort(groups)
		if want := []string{"consul", "nodes", "nomad", "pki", "targets", "test", "vault"}; !slices.Equal(groups, want) {
			t.Errorf("rule groups %v, want %v", groups, want)
		}
	})

	t.Run("the metrics the dashboards and rules use exist", func(t *testing.T) {
		used, err := monitoring.UsedMetrics()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for n := range used {
			if reason, ok := notScrapedHere(n); ok {
				t.Logf("%s (%s): %s", n, used[n], reason)
				delete(used, n)
				continue
			}
			names = append(names, regexp.QuoteMeta(n))
		}
		q := `count by (__name__) ({__name__=~"` + strings.Join(names, "|") + `"})`
		// Some appear a collection interval after the jobs start.
		waitUntil(t, 30*time.Second, "every metric", func() error {
			var res struct {
				Data struct {
					Result []struct {
						Metric map[string]string `json:"metric"`
					} `json:"result"`
				} `json:"data"`
			}
			if err := getJSON(prom+"/api/v1/query?query="+url.QueryEscape(q), &res); err != nil {
				return err
			}
			seen := map[string]bool{}
			for _, r := range res.Data.Result {
				seen[r.Metric["__name__"]] = true
			}
			var missing []string
			for n, where := range used {
				if !seen[n] {
					missing = append(missing, n+" (used by "+where+")")
				}
			}
			if len(missing) > 0 {
				return fmt.Errorf("not exported by any scraped target: %s", strings.Join(missing, ", "))
			}
			return nil
		})
	})

	t.Run("an alert reaches the webhook", func(t *testing.T) {
		waitUntil(t, 90*time.Second, "TestAlwaysFiring at the webhook", func() error {
			if !hook.received("TestAlwaysFiring") {
				return fmt.Errorf("not yet; got %d notifications", hook.count())
			}
			return nil
		})
	})

	t.Run("fabio routes", func(t *testing.T) {
		fabio := "http://" + e.ip + ":9999"
		for path, want := range map[string]string{
			"/prometheus/-/ready":   "Prometheus Server is Ready",
			"/alertmanager/-/ready": "OK",
		} {
			waitUntil(t, 60*time.Second, "fabio route "+path, func() error {
				body, err := get(fabio + path)
				if err != nil {
					return err
				}
				if !strings.Contains(body, want) {
					return fmt.Errorf("%s: %q", path, body)
				}
				return nil
			})
		}
		// Fabio's UI port answers its health check and lists the routes.
		body, err := get("http://" + e.ip + ":9998/api/routes")
		if err != nil || !strings.Contains(body, `"/prometheus"`) {
			t.Errorf("fabio routes: %v %s", err, body)
		}
	})

	if grafana {
		t.Run("grafana", func(t *testing.T) { checkGrafana(t, "http://"+e.ip+":9999/grafana") })
	}

	t.Run("tasks listen only on the node address", func(t *testing.T) {
		ls := taskListeners(t, e.nomadDir)
		// Every registered service is among them: the scan sees the tasks.
		for s, addr := range addrs {
			if !slices.ContainsFunc(ls, func(l listener) bool { return l.addr == addr }) {
				t.Errorf("service %s at %s is not among the tasks' listeners %v", s, addr, ls)
			}
		}
		for _, l := range ls {
			if !strings.HasPrefix(l.addr, e.ip+":") {
				t.Errorf("%s listens on %s, not on the node address %s", l.cmd, l.addr, e.ip)
			}
		}
	})
}

type listener struct{ cmd, addr string }

// taskListeners returns the TCP sockets listened on by the processes of
// Nomad tasks: those whose NOMAD_ALLOC_DIR is under allocRoot.
func taskListeners(t *testing.T, allocRoot string) []listener {
	t.Helper()
	inodes := map[string]string{} // socket inode -> command
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range pids {
		env, err := os.ReadFile(filepath.Join(p, "environ"))
		if err != nil || !strings.Contains(string(env), "\x00NOMAD_ALLOC_DIR="+allocRoot) && !strings.HasPrefix(string(env), "NOMAD_ALLOC_DIR="+allocRoot) {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join(p, "cmdline"))
		fds, _ := filepath.Glob(filepath.Join(p, "fd", "*"))
		for _, fd := range fds {
			if dst, err := os.Readlink(fd); err == nil && strings.HasPrefix(dst, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(dst, "socket:["), "]")] = strings.ReplaceAll(string(cmd), "\x00", " ")
			}
		}
	}
	var out []listener
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			if cmd, ok := inodes[f[9]]; ok {
				out = append(out, listener{cmd: cmd, addr: procAddr(f[1])})
			}
		}
	}
	return out
}

// procAddr decodes an address of /proc/net/tcp{,6}: hex IP in host byte
// order, hex port.
func procAddr(s string) string {
	host, port, _ := strings.Cut(s, ":")
	b, _ := hex.DecodeString(host)
	for i := 0; i+4 <= len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	p, _ := strconv.ParseUint(port, 16, 16)
	return net.JoinHostPort(net.IP(b).String(), strconv.FormatUint(p, 10))
}

// checkGrafana logs in with the password Vault gave the job and checks the
// provisioned dashboards and datasource.
func checkGrafana(t *testing.T, base string) {
	req := func(path string, out any) error {
		r, err := http.NewRequest("GET", base+path, nil)
		if err != nil {
			return err
		}
		r.SetBasicAuth("admin", grafanaPassword)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
		}
		return json.Unmarshal(b, out)
	}
	var search []struct {
		UID   string `json:"uid"`
		Title string `json:"title"`
	}
	want := len(monitoring.Dashboards())
	waitUntil(t, 60*time.Second, "the provisioned dashboards", func() error {
		if err := req("/api/search?type=dash-db", &search); err != nil {
			return err
		}
		if len(search) != want {
			return fmt.Errorf("%d dashboards, want %d", len(search), want)
		}
		return nil
	})
	// Every dashboard arrived whole.
	for name, b := range monitoring.Dashboards() {
		var d monitoring.Dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Dashboard monitoring.Dashboard `json:"dashboard"`
			Meta      struct {
				Provisioned bool `json:"provisioned"`
			} `json:"meta"`
		}
		if err := req("/api/dashboards/uid/"+d.UID, &got); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got.Dashboard.Title != d.Title || len(got.Dashboard.AllPanels()) != len(d.AllPanels()) || !got.Meta.Provisioned {
			t.Errorf("%s: Grafana has %q with %d panels (provisioned %v), want %q with %d", name,
				got.Dashboard.Title, len(got.Dashboard.AllPanels()), got.Meta.Provisioned, d.Title, len(d.AllPanels()))
		}
	}
	var health struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	}
	waitUntil(t, 60*time.Second, "the datasource health check", func() error {
		if err := req("/api/datasources/uid/"+monitoring.DatasourceUID+"/health", &health); err != nil {
			return err
		}
		if health.Status != "OK" {
			return fmt.Errorf("datasource: %+v", health)
		}
		return nil
	})
	// A query through the datasource returns data: node-exporter is up.
	body := `{"from": "now-5m", "to": "now", "queries": [{"refId": "A", "datasource": {"uid": "` + monitoring.DatasourceUID +
		`"}, "expr": "up{service=\"node-exporter\"}", "instant": true}]}`
	waitUntil(t, 30*time.Second, "a query through Grafana", func() error {
		r, err := http.NewRequest("POST", base+"/api/ds/query", strings.NewReader(body))
		if err != nil {
			return err
		}
		r.SetBasicAuth("admin", grafanaPassword)
		r.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out struct {
			Results map[string]struct {
				Error  string `json:"error"`
				Frames []struct {
					Data struct {
						Values [][]any `json:"values"`
					} `json:"data"`
				} `json:"frames"`
			} `json:"results"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			return fmt.Errorf("%s: %w", resp.Status, err)
		}
		a := out.Results["A"]
		if a.Error != "" || len(a.Frames) == 0 || len(a.Frames[0].Data.Values) < 2 || len(a.Frames[0].Data.Values[1]) == 0 {
			return fmt.Errorf("%s: %+v", resp.Status, out)
		}
		if v := a.Frames[0].Data.Values[1][0]; v != 1.0 {
			return fmt.Errorf("up = %v", v)
		}
		return nil
	})
}

type target struct {
	Labels    map[string]string `json:"labels"`
	ScrapeURL string            `json:"scrapeUrl"`
	Health    string            `json:"health"`
	LastError string            `json:"lastError"`
}

// webhook receives Alertmanager's notifications.
type webhook struct {
	url    string
	mu     sync.Mutex
	alerts []string
	n      int
}

func startWebhook(t *testing.T, ip string) *webhook {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	h := &webhook{url: "http://" + l.Addr().String() + "/alerts"}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
			} `json:"alerts"`
		}
		if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.n++
		for _, a := range msg.Alerts {
			h.alerts = append(h.alerts, a.Labels["alertname"])
		}
		h.mu.Unlock()
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return h
}

func (h *webhook) received(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.alerts, name)
}

func (h *webhook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// stopJobs deregisters the jobs and waits until their tasks are gone: a
// raw_exec task outlives its Nomad agent otherwise.
func stopJobs(t *testing.T, c *nomadapi.Client, names []string) {
	q := &nomadapi.QueryOptions{Namespace: Namespace}
	for _, n := range names {
		if _, _, err := c.Jobs().Deregister(n, false, &nomadapi.WriteOptions{Namespace: Namespace}); err != nil {
			t.Errorf("stop %s: %v", n, err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range names {
		for {
			allocs, _, err := c.Jobs().Allocations(n, true, q)
			running := 0
			for _, a := range allocs {
				if a.ClientStatus == "running" || a.ClientStatus == "pending" {
					running++
				}
			}
			if err == nil && running == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("job %s: %d allocations still running (%v)", n, running, err)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// allocProblems describes the allocations that are not running, for
// failure messages.
func allocProblems(c *nomadapi.Client) string {
	allocs, _, err := c.Allocations().List(&nomadapi.QueryOptions{Namespace: "*"})
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, a := range allocs {
		if a.ClientStatus == "running" {
			continue
		}
		fmt.Fprintf(&b, "\n  %s %s: %s", a.JobID, a.TaskGroup, a.ClientStatus)
		for task, s := range a.TaskStates {
			if n := len(s.Events); n > 0 {
				ev := s.Events[n-1]
				fmt.Fprintf(&b, " [%s: %s %s]", task, ev.Type, ev.DisplayMessage)
			}
		}
	}
	return b.String()
}

// checkOutputs returns the Consul check results of a service, for failure
// messages.
func checkOutputs(e *env, service string) string {
	checks, _, err := e.consul.Client.Health().Checks(service, nil)
	if err != nil {
		return ""
	}
	var b strings.Builder
	for _, c := range checks {
		fmt.Fprintf(&b, "\n  check %s: %s: %s", c.Name, c.Status, c.Output)
	}
	return b.String()
}

// taskLogs returns the end of the stderr logs of a task, for failure
// messages.
func taskLogs(e *env, task string) string {
	files, _ := filepath.Glob(filepath.Join(e.nomadDir, "data", "alloc", "*", "alloc", "logs", task+".std*.0"))
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		fmt.Fprintf(&b, "\n  %s:\n    %s", filepath.Base(f), strings.Join(lines[max(0, len(lines)-10):], "\n    "))
	}
	return b.String()
}

func get(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

func getJSON(url string, out any) error {
	body, err := get(url)
	if err != nil {
		return err
	}
	return json.Unmarshal([]byte(body), out)
}

func haveBin(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// notScrapedHere says why a metric cannot be seen in this test's platform.
func notScrapedHere(name string) (string, bool) {
	if strings.HasPrefix(name, "consul_") {
		return "the test's Consul has no Prometheus telemetry; monitoring's tests check these names against a real Consul", true
	}
	return "", false
}
