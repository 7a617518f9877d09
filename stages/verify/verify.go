// Package verify is the last stage: the checks a user would make by hand
// once the platform is up — Prometheus scrapes Nomad, Consul, Vault,
// node-exporter and itself and discovers a newly deployed service, a query
// for node CPU has a value per client, Grafana serves its dashboards through
// a working datasource, Fabio routes, the Nomad UI answers the read-only
// token, and the Consul, Prometheus and Grafana UIs are the real
// applications, not the page a binary built without them serves.
//
// Plan runs the read-only checks once, without waiting: a platform that
// passes them and was verified before has nothing to do. Apply runs every
// check with retries, plus the discovery of a short-lived probe service
// when Prometheus, its Consul CA or its token changed since the last probe.
package verify

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	platformjobs "github.com/platform-bootstrap/bootstrap/jobs"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/tools"
)

// Stage is the verify stage.
type Stage struct{}

// New returns the verify stage.
func New() *Stage { return &Stage{} }

// Name is "verify".
func (*Stage) Name() string { return "verify" }

type env struct {
	e       *stages.Env
	inv     *inventory.Inventory
	http    *http.Client
	prom    string // Prometheus through Fabio
	grafana string
	fabio   string
	nomad   string
	consul  string
	am      string // Alertmanager through Fabio
	uiToken string
	grafPW  string
}

func load(e *stages.Env) (*env, error) {
	inv, err := e.Inventory()
	if err != nil {
		return nil, err
	}
	out := e.State.Outputs()
	v := &env{e: e, inv: inv, prom: out[stages.OutPrometheusAddr], grafana: out[stages.OutGrafanaAddr], fabio: out[stages.OutFabioAddr], nomad: out[stages.OutNomadAddr], consul: out[stages.OutConsulAddr], am: out[stages.OutAlertmanagerAddr]}
	if v.nomad == "" {
		return nil, stages.NotReadyf("nomad is not up yet")
	}
	if v.fabio == "" && e.Config.Jobs.Fabio.Enabled {
		return nil, stages.NotReadyf("the platform jobs are not running yet")
	}
	pool := x509.NewCertPool()
	for _, ca := range []string{out[stages.OutNomadCACert], out[stages.OutConsulCACert]} {
		if ca == "" {
			continue
		}
		b, err := os.ReadFile(ca)
		if err != nil {
			return nil, err
		}
		pool.AppendCertsFromPEM(b)
	}
	v.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	tok, ok, err := e.Secrets.Get(stages.SecretNomadUIToken)
	if err != nil || !ok {
		return nil, stages.NotReadyf("no nomad UI token yet")
	}
	v.uiToken = strings.TrimSpace(tok)
	if e.Config.Jobs.Grafana.Enabled {
		pw, ok, err := e.Secrets.Get(stages.SecretGrafanaAdminPassword)
		if err != nil || !ok {
			return nil, stages.NotReadyf("no grafana password yet")
		}
		v.grafPW = pw
	}
	return v, nil
}

// check is one thing a user would look at.
type check struct {
	name string
	run  func(ctx context.Context, v *env) error
	// attempt bounds one run of the check; 15s when zero. Discovery needs
	// longer: its clock must cover an allocation start and a scrape.
	attempt time.Duration
}

func (v *env) checks() []check {
	cfg := v.e.Config
	var cs []check
	if cfg.Jobs.Prometheus.Enabled {
		cs = append(cs, check{name: "prometheus scrapes nomad, consul, vault, node-exporter and itself", run: checkTargets})
		if cfg.Jobs.NodeExporter.Enabled {
			cs = append(cs, check{name: "a node CPU query returns a value per node, servers too", run: checkNodeCPU})
		}
	}
	if cfg.Jobs.Grafana.Enabled {
		cs = append(cs, check{name: "grafana serves the dashboards through a working datasource", run: checkGrafana})
	}
	if cfg.Jobs.Fabio.Enabled && cfg.Jobs.Prometheus.Enabled {
		cs = append(cs, check{name: "fabio routes /prometheus", run: checkFabio})
	}
	cs = append(cs, check{name: "the nomad UI answers the read-only token", run: checkNomadUI})
	if cfg.Consul.UI {
		cs = append(cs, check{name: "the consul UI is served", run: checkConsulUI})
	}
	if cfg.Jobs.Prometheus.Enabled {
		cs = append(cs, check{name: "the prometheus UI is served", run: checkPrometheusUI})
	}
	if cfg.Jobs.Grafana.Enabled {
		cs = append(cs, check{name: "the grafana UI is served", run: checkGrafanaUI})
	}
	if cfg.Jobs.Alertmanager.Enabled && cfg.Jobs.Prometheus.Enabled {
		cs = append(cs, check{name: "the alertmanager UI is served", run: checkAlertmanagerUI})
	}
	if in := cfg.Ingress; in != nil && in.TLS != nil && cfg.Jobs.Fabio.Enabled {
		cs = append(cs, check{name: fmt.Sprintf("the public addresses serve %s's certificate over HTTPS and redirect port %d to it", in.Namespace, in.Port), run: checkIngressTLS})
	}
	return cs
}

// errPassed is how the log shows a check that passed.
var errPassed = errors.New("passed")

// verifiedNote records when the platform last passed every check.
const verifiedNote = "verified"

// Plan runs the read-only checks once. A failing check, or a platform never
// verified, is a change: Apply runs every check with retries.
func (s *Stage) Plan(ctx context.Context, e *stages.Env) ([]stages.Change, error) {
	v, err := load(e)
	if err != nil {
		return stages.WithKnown(nil, err, func() []stages.Change { return knownChanges(e) })
	}
	var out []stages.Change
	for _, c := range v.checks() {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		start := time.Now()
		err := c.run(cctx, v)
		cancel()
		e.Logf("check %q: %v in %s", c.name, cmp.Or(err, errPassed), time.Since(start).Round(time.Millisecond))
		if err != nil {
			out = append(out, stages.Change{Action: "check", Target: c.name, Detail: "failing: " + err.Error()})
		}
	}
	if e.Config.Jobs.Prometheus.Enabled && e.Note(verifiedNote) != "" {
		const target = "a new service tagged prometheus becomes a target"
		switch _, stale, err := v.discoveryProof(ctx); {
		case err != nil:
			out = append(out, stages.Change{Action: "check", Target: target, Detail: "failing: " + err.Error()})
		case stale:
			out = append(out, stages.Change{Action: "check", Target: target, Detail: "prometheus, its Consul CA or token changed since discovery was proven"})
		}
	}
	if e.Note(verifiedNote) == "" && len(out) == 0 {
		out = append(out, stages.Change{Action: "check", Target: "the platform end to end", Detail: "never verified"})
	}
	return out, nil
}

// knownChanges are the checks a first run makes: shown while the stage
// waits for the platform.
func knownChanges(e *stages.Env) []stages.Change {
	var out []stages.Change
	for _, c := range (&env{e: e}).checks() {
		out = append(out, stages.Change{Action: reconcile.Check, Target: c.name})
	}
	return out
}

// Apply runs every check until it passes or times out, and proves that a
// newly deployed service tagged prometheus is discovered.
func (s *Stage) Apply(ctx context.Context, e *stages.Env) error {
	v, err := load(e)
	if err != nil {
		return err
	}
	checks := v.checks()
	var proof string // what discovery was proven with
	if e.Config.Jobs.Prometheus.Enabled {
		var stale bool
		if proof, stale, err = v.discoveryProof(ctx); err != nil {
			return err
		}
		if stale {
			checks = append(checks, check{name: "a new service tagged prometheus becomes a target within a minute", run: checkDiscovery, attempt: 2 * time.Minute})
		} else {
			e.Step("discovery of new services was proven with this Prometheus job, Consul CA and token: not probed again")
		}
	}
	var errs []error
	for _, c := range checks {
		e.Step("checking that %s", c.name)
		if err := retry(ctx, 3*time.Minute, c.attempt, func(ctx context.Context) error { return c.run(ctx, v) }); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, u := range []struct{ name, url string }{{"Prometheus", v.prom}, {"Grafana", v.grafana}, {"Fabio", v.fabio}, {"Nomad UI", v.nomad + "/ui/"}} {
		if u.url != "" {
			e.Step("%s: %s", u.name, u.url)
		}
	}
	if proof != "" {
		if err := e.SetNote(discoveredNote, proof); err != nil {
			return err
		}
	}
	return e.SetNote(verifiedNote, time.Now().UTC().Format(time.RFC3339))
}

// discoveredNote records what the probe proved discovery with: the next
// Apply (a new client, a restarted agent) probes again only when one of
// those changed. Prometheus keeps the targets it found while its Consul
// discovery fails, so checkTargets alone would not notice a broken one.
const discoveredNote = "discovered"

// discoveryProof is a digest of what Prometheus's discovery depends on:
// its job's version (the configuration it renders), the Consul CA and its
// Consul token, which reach it through templates without changing the job.
// A digest, so the state holds nothing that would give the token away.
// Stale: it is not the one the last probe recorded, or there is none (no
// Prometheus job yet), so the probe must run.
func (v *env) discoveryProof(ctx context.Context) (proof string, stale bool, err error) {
	nc, err := v.nomadClient()
	if err != nil {
		return "", false, err
	}
	job, _, err := nc.Jobs().Info(platformjobs.Prometheus, (&nomadapi.QueryOptions{Namespace: platformjobs.Namespace}).WithContext(ctx))
	if err != nil {
		if strings.Contains(err.Error(), "404") {
			return "", true, nil // not yet (again): nothing was proven with it
		}
		return "", false, fmt.Errorf("the prometheus job: %w", err)
	}
	ca, err := os.ReadFile(v.e.State.Output(stages.OutConsulCACert))
	if err != nil {
		return "", false, fmt.Errorf("the consul CA: %w", err)
	}
	tok, _, err := v.e.Secrets.Get(stages.SecretConsulPrometheusToken)
	if err != nil {
		return "", false, err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d\n%s\n%s", *job.JobModifyIndex, ca, strings.TrimSpace(tok))
	proof = hex.EncodeToString(h.Sum(nil))[:16]
	return proof, proof != v.e.Note(discoveredNote), nil
}

// nomadClient is a Nomad client with the management token: the probe is
// a job of the platform's namespace.
func (v *env) nomadClient() (*nomadapi.Client, error) {
	mgmt, _, err := v.e.Secrets.Get(stages.SecretNomadBootstrapToken)
	if err != nil {
		return nil, err
	}
	return cluster.NomadClient(v.nomad, v.e.State.Output(stages.OutNomadCACert), "", strings.TrimSpace(mgmt))
}

// retry runs f until it succeeds or timeout passes, each run bounded by
// attempt (15s when 0), and returns its last error.
func retry(ctx context.Context, timeout, attempt time.Duration, f func(context.Context) error) error {
	if attempt == 0 {
		attempt = 15 * time.Second
	}
	return poll.Retry(ctx, timeout, 2*time.Second, func() error {
		ctx, cancel := context.WithTimeout(ctx, attempt)
		defer cancel()
		return f(ctx)
	}, poll.Never)
}

// get fetches url and decodes JSON into out (when not nil).
func (v *env) get(ctx context.Context, u string, header http.Header, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := v.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if out == nil {
		return nil
	}
	if text, ok := out.(*string); ok {
		*text = string(body)
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

type target struct {
	Labels    map[string]string `json:"labels"`
	Health    string            `json:"health"`
	LastError string            `json:"lastError"`
}

func (v *env) targets(ctx context.Context) ([]target, error) {
	var resp struct {
		Data struct {
			ActiveTargets []target `json:"activeTargets"`
		} `json:"data"`
	}
	if err := v.get(ctx, v.prom+"/api/v1/targets?state=active", nil, &resp); err != nil {
		return nil, err
	}
	return resp.Data.ActiveTargets, nil
}

func checkTargets(ctx context.Context, v *env) error {
	ts, err := v.targets(ctx)
	if err != nil {
		return err
	}
	want := map[string]int{"nomad-server": 0, "nomad-client": 0, "consul": 0, "vault": 0, "prometheus": 0}
	if v.e.Config.Jobs.NodeExporter.Enabled {
		want["node-exporter"] = 0
	}
	var down []string
	for _, t := range ts {
		key := t.Labels["job"]
		if key == "consul_sd_metrics" {
			key = t.Labels["service"]
		}
		if _, ok := want[key]; !ok {
			continue
		}
		if t.Health == "up" {
			want[key]++
		} else {
			down = append(down, fmt.Sprintf("%s %s (%s)", key, t.Labels["instance"], t.LastError))
		}
	}
	var missing []string
	for k, n := range want {
		if n == 0 {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 || len(down) > 0 {
		return fmt.Errorf("no healthy target for %v; down: %v", missing, down)
	}
	if n, ok := want["node-exporter"]; ok && n < len(v.nodes()) {
		return fmt.Errorf("node-exporter is up on %d node(s), want every one of the %d", n, len(v.nodes()))
	}
	// The client agents are discovered through Consul: each must be found.
	clients := len(v.inv.ClientsOnly())
	if n := want["nomad-client"]; n < clients {
		return fmt.Errorf("nomad is scraped on %d client(s), want every one of the %d", n, clients)
	}
	return nil
}

// nodes are the nodes node-exporter runs on: every server and client.
func (v *env) nodes() []inventory.Node {
	var out []inventory.Node
	for _, n := range v.inv.Nodes {
		if n.Has(inventory.RoleServer) || n.Has(inventory.RoleClient) {
			out = append(out, n)
		}
	}
	return out
}

// instances returns the instance label of each series q returns.
func (v *env) instances(ctx context.Context, q string) (map[string]bool, error) {
	var resp struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := v.get(ctx, v.prom+"/api/v1/query?query="+url.QueryEscape(q), nil, &resp); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, r := range resp.Data.Result {
		out[r.Metric["instance"]] = true
	}
	return out, nil
}

// checkNodeCPU wants every node's CPU metrics as last scraped: an instant
// query, which leaves out the series of a target that is gone. A rate
// over a window would still count a removed node for that window, and
// lose a node that came back at the same address until its second scrape.
func checkNodeCPU(ctx context.Context, v *env) error {
	have, err := v.instances(ctx, `count by (instance) (node_cpu_seconds_total)`)
	if err != nil {
		return err
	}
	var missing []string
	for _, n := range v.nodes() {
		if !have[net.JoinHostPort(n.Address(), fmt.Sprint(stages.NodeExporterPort))] {
			missing = append(missing, n.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("no node CPU metrics for %s", strings.Join(missing, ", "))
	}
	return nil
}

func checkGrafana(ctx context.Context, v *env) error {
	if err := v.get(ctx, v.grafana+"/api/health", nil, nil); err != nil {
		return err
	}
	auth := http.Header{"Authorization": {"Basic " + basic("admin", v.grafPW)}}
	var dashboards []struct {
		Title string `json:"title"`
	}
	if err := v.get(ctx, v.grafana+"/api/search?type=dash-db", auth, &dashboards); err != nil {
		return err
	}
	if len(dashboards) < 5 {
		return fmt.Errorf("grafana has %d dashboards, want at least 5", len(dashboards))
	}
	var health struct {
		Status  string `json:"status"`
		Message string `json:"message"`
	}
	if err := v.get(ctx, v.grafana+"/api/datasources/uid/prometheus/health", auth, &health); err != nil {
		return err
	}
	if health.Status != "OK" {
		return fmt.Errorf("grafana's prometheus datasource: %s %s", health.Status, health.Message)
	}
	// A query through Grafana's datasource proxy returns data.
	var res struct {
		Data struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := v.get(ctx, v.grafana+"/api/datasources/proxy/uid/prometheus/api/v1/query?query=up", auth, &res); err != nil {
		return err
	}
	if len(res.Data.Result) == 0 {
		return errors.New("a query through grafana's datasource returned no data")
	}
	return nil
}

func checkFabio(ctx context.Context, v *env) error {
	return v.get(ctx, v.fabio+"/prometheus/-/ready", nil, nil)
}

func checkNomadUI(ctx context.Context, v *env) error {
	if err := v.checkApp(ctx, v.nomad+"/ui/", "nomad-ui/config/environment", nomadUIScript); err != nil {
		return err
	}
	// The UI's first call: the jobs the read-only token may see.
	return v.get(ctx, v.nomad+"/v1/jobs?namespace=*", http.Header{"X-Nomad-Token": {v.uiToken}}, nil)
}

// A UI is its page and the scripts the page loads. A binary built without
// its UI answers 200 with a page too (Nomad and Vault: "UI is not available
// in this binary"; Prometheus: "Error opening React index.html"; Grafana
// without its frontend: no bundles), so each check looks for the
// application's own marker and loads its script.
var (
	nomadUIScript      = regexp.MustCompile(`src="(/ui/assets/nomad-ui-[0-9a-f]+\.js)"`)
	consulUIScript     = regexp.MustCompile(`src="(/ui/assets/init-[0-9a-f]+\.js)"`)
	prometheusUIScript = regexp.MustCompile(`src="\./(assets/index-[A-Za-z0-9_-]+\.js)"`)
	alertmanagerScript = regexp.MustCompile(`src="(script\.js)"`)
	grafanaUIScript    = regexp.MustCompile(`src="(?:[^"]*/)?(public/build/app\.[0-9a-f]+\.js)"`)
)

func checkConsulUI(ctx context.Context, v *env) error {
	return v.checkApp(ctx, v.consul+"/ui/", "consul-ui/config/environment", consulUIScript)
}

func checkPrometheusUI(ctx context.Context, v *env) error {
	return v.checkApp(ctx, v.prom+"/query", "<title>Prometheus", prometheusUIScript)
}

func checkAlertmanagerUI(ctx context.Context, v *env) error {
	return v.checkApp(ctx, v.am+"/", "Elm.Main.init", alertmanagerScript)
}

func checkGrafanaUI(ctx context.Context, v *env) error {
	return v.checkApp(ctx, v.grafana+"/login", "grafanaBootData", grafanaUIScript)
}

// checkApp fetches page, looks for marker, and loads the script that
// script finds, resolved against the page's URL as the browser does.
func (v *env) checkApp(ctx context.Context, page, marker string, script *regexp.Regexp) error {
	var body string
	if err := v.get(ctx, page, nil, &body); err != nil {
		return err
	}
	if !strings.Contains(body, marker) {
		return fmt.Errorf("GET %s: not the application (built without its web UI?): %.80q", page, body)
	}
	m := script.FindStringSubmatch(body)
	if m == nil {
		return fmt.Errorf("GET %s: the page loads none of the application's scripts (built without its web UI?)", page)
	}
	base, err := url.Parse(page)
	if err != nil {
		return err
	}
	src, err := url.Parse(m[1])
	if err != nil {
		return fmt.Errorf("GET %s: script %q: %w", page, m[1], err)
	}
	return v.served(ctx, base.ResolveReference(src).String())
}

// served checks that u is served, asking for its first bytes only: the
// scripts are megabytes, which a converged plan has no reason to move
// (Nomad's took most of the stage's time). A server that ignores Range
// answers 200 with the whole file, of which only the start is read;
// Prometheus's asset server refuses any range (416), and is asked again
// without one.
func (v *env) served(ctx context.Context, u string) error {
	resp, err := v.getStart(ctx, u, true)
	if err == nil && resp.StatusCode == http.StatusRequestedRangeNotSatisfiable {
		resp.Body.Close()
		resp, err = v.getStart(ctx, u, false)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if n, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1024)); err != nil || n == 0 {
		return fmt.Errorf("GET %s: an empty script (%v)", u, err)
	}
	return nil
}

func (v *env) getStart(ctx context.Context, u string, ranged bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if ranged {
		req.Header.Set("Range", "bytes=0-1023")
	}
	return v.http.Do(req)
}

// checkIngressTLS checks that every client with a public address serves
// the certificate of cert_file on the HTTPS port, and answers its HTTP
// port with a redirect there.
func checkIngressTLS(ctx context.Context, v *env) error {
	in := v.e.Config.Ingress
	b, err := os.ReadFile(v.e.Config.Path(in.TLS.CertFile))
	if err != nil {
		return fmt.Errorf("ingress certificate: %w", err)
	}
	want, _ := pem.Decode(b) // the leaf comes first, its chain after it
	if want == nil {
		return fmt.Errorf("ingress certificate: %s holds no PEM block", in.TLS.CertFile)
	}
	// The served certificate is compared with the file's, byte for byte,
	// which says more than whether some CA vouches for it: the file's may
	// be one this machine does not trust (a private CA's).
	dialer := &tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var errs []error
	for _, n := range v.inv.WithRole(inventory.RoleClient) {
		if n.PublicIP == "" {
			continue
		}
		addr := net.JoinHostPort(n.PublicIP, fmt.Sprint(in.TLS.Port))
		conn, err := dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		served := conn.(*tls.Conn).ConnectionState().PeerCertificates
		conn.Close()
		if len(served) == 0 || !bytes.Equal(served[0].Raw, want.Bytes) {
			errs = append(errs, fmt.Errorf("%s serves another certificate than %s", addr, in.TLS.CertFile))
		}
		u := "http://" + net.JoinHostPort(n.PublicIP, fmt.Sprint(in.Port)) + "/"
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp.Body.Close()
		if to, _ := resp.Location(); resp.StatusCode != http.StatusMovedPermanently || to == nil || to.Scheme != "https" {
			errs = append(errs, fmt.Errorf("GET %s: %s to %v, want a redirect to https", u, resp.Status, to))
		}
	}
	return errors.Join(errs...)
}

func basic(user, pw string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pw))
}

// checkDiscovery deploys a small service tagged prometheus (a second
// node-exporter on a dynamic port), waits until Prometheus lists it as a
// target and removes it again.
func checkDiscovery(ctx context.Context, v *env) error {
	nc, err := v.nomadClient()
	if err != nil {
		return err
	}
	// A service name of its own: a target left by an earlier probe (a
	// run killed before it deregistered, or one Prometheus has yet to
	// drop) must not pass for this one.
	service := fmt.Sprintf("%s-%x", probeService, rand.Uint32())
	job := probeJob(v, service)
	w := (&nomadapi.WriteOptions{Namespace: *job.Namespace}).WithContext(ctx)
	if _, _, err := nc.Jobs().Register(job, w); err != nil {
		return fmt.Errorf("register the probe: %w", err)
	}
	defer nc.Jobs().Deregister(*job.ID, true, (&nomadapi.WriteOptions{Namespace: *job.Namespace}).WithContext(context.WithoutCancel(ctx)))

	// The minute is Prometheus's: it starts once the probe runs, so a busy
	// machine that is slow to start a process does not fail discovery.
	q := (&nomadapi.QueryOptions{Namespace: *job.Namespace}).WithContext(ctx)
	err = poll.Until(ctx, 5*time.Minute, time.Second, func() (bool, error) {
		allocs, _, err := nc.Jobs().Allocations(*job.ID, false, q)
		if err != nil {
			return false, fmt.Errorf("the probe's allocations: %w", err)
		}
		for _, a := range allocs {
			switch a.ClientStatus {
			case nomadapi.AllocClientStatusRunning:
				return true, nil
			case nomadapi.AllocClientStatusFailed:
				return false, fmt.Errorf("the probe allocation %s failed: %s", a.ID[:8], a.ClientDescription)
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("the probe job never ran: %w", err)
	}
	v.e.Step("the probe runs; waiting for Prometheus to find it")

	// A target waiting for its first scrape (health "unknown", up to a
	// scrape interval) is discovered: that the scrapes of discovered
	// services work is checkTargets's part, on node-exporter's targets.
	last := "not discovered"
	err = poll.Until(ctx, time.Minute, time.Second, func() (bool, error) {
		ts, err := v.targets(ctx)
		if err != nil {
			last = err.Error()
		}
		for _, t := range ts {
			if t.Labels["service"] != service {
				continue
			}
			if t.Health != "down" {
				return true, nil
			}
			last = fmt.Sprintf("target %s is %s: %s", t.Labels["instance"], t.Health, t.LastError)
		}
		return false, nil
	})
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("the probe service %s was not a target within a minute of running (%s)", service, last)
	}
	if err != nil {
		return fmt.Errorf("the probe service %s: %w (%s)", service, err, last)
	}
	return nil
}

const probeService = "bootstrap-verify-probe"

func probeJob(v *env, service string) *nomadapi.Job {
	ns := "general"
	job := nomadapi.NewServiceJob(probeService, probeService, v.e.Config.Region, 50)
	job.Namespace = &ns
	job.Datacenters = []string{v.e.Config.Datacenter}
	tg := nomadapi.NewTaskGroup("probe", 1)
	tg.Networks = []*nomadapi.NetworkResource{{DynamicPorts: []nomadapi.Port{{Label: "http"}}}}
	tg.Services = []*nomadapi.Service{{
		Name:      service,
		PortLabel: "http",
		Address:   "${meta.node_address}",
		Tags:      []string{"prometheus"},
		Provider:  "consul",
	}}
	args := []string{"--web.listen-address=${meta.node_address}:${NOMAD_PORT_http}", "--no-collector.systemd"}
	var task *nomadapi.Task
	if v.e.Config.Provider.Local != nil || v.e.Config.Jobs.Driver == "raw_exec" || v.e.Config.Jobs.Driver == "exec" {
		bin := v.inv.WithRole(inventory.RoleClient)[0].Local
		// The local provider's clients, or machines that run the jobs'
		// binaries from the provider's bin_dir (the jobs stage's profile).
		dir := ""
		if bin != nil {
			dir = bin.BinDir
		} else if m := v.e.Config.Provider.Machines(); m != nil {
			dir = m.BinDir
		}
		task = nomadapi.NewTask("probe", "raw_exec").SetConfig("command", filepath.Join(dir, "prometheus-node-exporter")).SetConfig("args", args)
	} else {
		// The node-exporter job's image: the clients hold it already when
		// that job runs, from the registry the configuration chose.
		image := cmp.Or(v.e.Config.Jobs.NodeExporter.Image, platformjobs.Images(tools.Versions())[platformjobs.NodeExporter]["image"])
		task = nomadapi.NewTask("probe", "docker").SetConfig("image", image).SetConfig("args", args).SetConfig("network_mode", "host")
	}
	cpu, mem := 50, 32
	task.Require(&nomadapi.Resources{CPU: &cpu, MemoryMB: &mem})
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}
