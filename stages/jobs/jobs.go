// Package jobs is the stage that runs the platform's own services on Nomad,
// in the general namespace: Fabio, Prometheus with Alertmanager, Grafana
// with its dashboards, node-exporter and, when configured, a GitLab Runner.
// Their secrets go to Vault KV, where the jobs read them through Nomad's
// workload identity; a job is registered only when Nomad's plan shows a
// difference, and the stage waits until it is healthy.
package jobs

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	nomadapi "github.com/hashicorp/nomad/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/nomadjob"
	"github.com/platform-bootstrap/bootstrap/internal/parallel"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	platformjobs "github.com/platform-bootstrap/bootstrap/jobs"
	"github.com/platform-bootstrap/bootstrap/monitoring"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/tools"
)

// Stage is the jobs stage.
type Stage struct{}

// New returns the jobs stage.
func New() *Stage { return &Stage{} }

// Name is "jobs".
func (*Stage) Name() string { return "jobs" }

// FabioPort and FabioUIPort are the platform Fabio's static ports on every
// client.
const (
	FabioPort   = 9999
	FabioUIPort = 9998
)

// FabioAppPort is the port of the Fabio of the i-th application namespace
// (10001 for dev, 10002 for prod with the defaults): each namespace's
// applications are served by a Fabio of their own.
func FabioAppPort(i int) int { return 10001 + i }

// platform is everything the stage needs from earlier stages.
type platform struct {
	cfg   *config.Platform
	inv   *inventory.Inventory
	nomad *nomadapi.Client
	vault *vaultapi.Client
	// secrets the jobs read from Vault KV: path under secret/ → fields.
	kv map[string]map[string]string
}

// ingressTLSPrefix names, with a namespace, the KV path of the ingress
// certificate that namespace's Fabio serves.
const ingressTLSPrefix = "general/fabio/tls-"

func load(ctx context.Context, e *stages.Env) (*platform, error) {
	inv, err := e.Inventory()
	if err != nil {
		return nil, err
	}
	if e.State.Output(stages.OutNomadAddr) == "" {
		return nil, stages.NotReadyf("nomad is not up yet")
	}
	get := func(name string) (string, error) {
		v, ok, err := e.Secrets.Get(name)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", stages.NotReadyf("%s does not exist yet (consul and nomad stages)", name)
		}
		return strings.TrimSpace(v), nil
	}
	mgmt, err := get(stages.SecretNomadBootstrapToken)
	if err != nil {
		return nil, err
	}
	nc, err := cluster.NomadServer(e, mgmt)
	if err != nil {
		return nil, err
	}
	vc, err := pki.NewClient(e.State.Output(stages.OutVaultAddr), e.State.Output(stages.OutVaultCACert))
	if err != nil {
		return nil, err
	}
	tok, err := pki.Token(ctx, e, vc)
	if err != nil {
		return nil, err
	}
	vc.SetToken(tok)
	p := &platform{cfg: e.Config, inv: inv, nomad: nc, vault: vc, kv: map[string]map[string]string{}}
	fabio, err := get(stages.SecretConsulFabioToken)
	if err != nil {
		return nil, err
	}
	promConsul, err := get(stages.SecretConsulPrometheusToken)
	if err != nil {
		return nil, err
	}
	promNomad, err := get(stages.SecretNomadPrometheusToken)
	if err != nil {
		return nil, err
	}
	p.kv["general/fabio/consul"] = map[string]string{"token": fabio}
	for _, ns := range e.Config.Nomad.Namespaces {
		tok, err := get(stages.SecretConsulFabioNamespaceToken(ns))
		if err != nil {
			return nil, err
		}
		p.kv["general/fabio/consul-"+ns] = map[string]string{"token": tok}
	}
	p.kv["general/prometheus/tokens"] = map[string]string{"consul": promConsul, "nomad": promNomad}
	if e.Config.Jobs.Grafana.Enabled {
		pw, _, err := e.Secrets.GetOrCreate(stages.SecretGrafanaAdminPassword, password)
		if err != nil {
			return nil, err
		}
		p.kv["general/grafana/admin"] = map[string]string{"password": pw}
	}
	if r := e.Config.GitLabRunner; r != nil {
		p.kv["general/gitlab-runner/token"] = map[string]string{"token": r.Token}
	}
	if in := e.Config.Ingress; in != nil && in.TLS != nil {
		cert, err := os.ReadFile(e.Config.Path(in.TLS.CertFile))
		if err != nil {
			return nil, fmt.Errorf("ingress: %w", err)
		}
		key, err := os.ReadFile(e.Config.Path(in.TLS.KeyFile))
		if err != nil {
			return nil, fmt.Errorf("ingress: %w", err)
		}
		p.kv[ingressTLSPrefix+in.Namespace] = map[string]string{"cert": string(cert), "key": string(key)}
	}
	return p, nil
}

// binDir is where the clients find the binaries of the raw_exec profile.
func binDir(p *platform) (string, error) {
	for _, n := range p.inv.WithRole(inventory.RoleClient) {
		if n.Local != nil {
			return n.Local.BinDir, nil
		}
	}
	if m := p.cfg.Provider.Machines(); m != nil && m.BinDir != "" {
		return m.BinDir, nil
	}
	return "", fmt.Errorf("jobs.driver = %q runs local binaries, but the clients have no bin_dir: use driver = \"docker\" or set bin_dir", p.cfg.JobsDriver())
}

// Spec is one platform job to run, with its variables.
type Spec struct {
	Name string
	Vars platformjobs.Variables
}

// Specs returns the platform jobs the configuration enables, with the
// variables the jobs stage submits them with on inv's nodes.
func Specs(e *stages.Env, inv *inventory.Inventory) ([]Spec, error) {
	return wanted(e, &platform{cfg: e.Config, inv: inv})
}

// wanted returns the jobs the configuration enables, with their variables.
func wanted(e *stages.Env, p *platform) ([]Spec, error) {
	cfg := p.cfg
	drv := cfg.JobsDriver()
	var bin string
	if drv != "docker" {
		var err error
		if bin, err = binDir(p); err != nil {
			return nil, err
		}
	}
	// The docker profile's images come from the pins the binaries are
	// tested at. They are passed even though the job files' defaults are
	// the same (jobs.TestImageDefaults), so that versions.env is the one
	// source and the files' copies only serve `nomad job run`.
	images := platformjobs.Images(tools.Versions())
	base := func(j config.Job, binary, image string) platformjobs.Variables {
		v := platformjobs.Variables{"driver": drv, "datacenters": []string{cfg.Datacenter}, "cpu": j.CPU, "memory": j.Memory}
		if drv == "docker" {
			v["image"] = cmp.Or(j.Image, image)
		} else {
			v["binary"] = filepath.Join(bin, binary)
		}
		return v
	}
	consulCA, err := rootCA(e.CAFile("consul"))
	if err != nil {
		return nil, err
	}
	var out []Spec
	if j := cfg.Jobs.NodeExporter; j.Enabled {
		out = append(out, Spec{platformjobs.NodeExporter, base(j, "prometheus-node-exporter", images[platformjobs.NodeExporter]["image"])})
	}
	if j := cfg.Jobs.Fabio; j.Enabled {
		v := base(j, "fabio", images[platformjobs.Fabio]["image"])
		v["consul_ca_pem"] = consulCA
		v["proxy_port"] = FabioPort
		v["ui_port"] = FabioUIPort
		var apps []map[string]any
		for i, ns := range cfg.Nomad.Namespaces {
			public, tls := 0, 0
			if in := cfg.Ingress; in != nil && in.Namespace == ns {
				public = in.Port
				if in.TLS != nil {
					tls = in.TLS.Port
				}
			}
			apps = append(apps, map[string]any{"namespace": ns, "port": FabioAppPort(i), "public_port": public, "tls_port": tls})
		}
		v["app_listeners"] = apps
		v["public"] = cfg.Ingress != nil && cfg.Ingress.Platform
		out = append(out, Spec{platformjobs.Fabio, v})
	}
	if j := cfg.Jobs.Prometheus; j.Enabled {
		v, err := prometheusVars(e, p, base(j, "prometheus", images[platformjobs.Prometheus]["image"]), bin, images[platformjobs.Prometheus]["alertmanager_image"])
		if err != nil {
			return nil, err
		}
		out = append(out, Spec{platformjobs.Prometheus, v})
	}
	if j := cfg.Jobs.Grafana; j.Enabled {
		v := base(j, "grafana", images[platformjobs.Grafana]["image"])
		v["count"] = j.Count
		v["datasources_yml"] = string(monitoring.GrafanaDatasources())
		v["dashboards_yml"] = string(monitoring.GrafanaDashboardProvider())
		dash := monitoring.Dashboards()
		if dir := cfg.Monitoring.DashboardsDir; dir != "" {
			own, err := monitoring.ReadDashboardsDir(cfg.Path(dir))
			if err != nil {
				return nil, err
			}
			for k, b := range own {
				dash[k] = b
			}
		}
		v["dashboards"] = dash
		v["scrape_interval"] = cfg.Monitoring.ScrapeInterval
		if drv != "docker" {
			home, err := filepath.EvalSymlinks(filepath.Join(bin, "grafana-home"))
			if err != nil {
				return nil, fmt.Errorf("grafana's home (%s/grafana-home, from make tools): %w", bin, err)
			}
			v["homepath"] = home
		}
		out = append(out, Spec{platformjobs.Grafana, v})
	}
	if r := cfg.GitLabRunner; r != nil {
		v := base(config.Job{CPU: 500, Memory: 512}, "gitlab-runner", images[platformjobs.GitLabRunner]["image"])
		v["gitlab_url"] = r.URL
		v["executor"] = r.Executor
		v["concurrent"] = r.Concurrent
		v["job_image"] = r.Image
		out = append(out, Spec{platformjobs.GitLabRunner, v})
	}
	return out, nil
}

// prometheusVars renders prometheus.yml, the rules and alertmanager.yml for
// this platform's nodes. amImage is Alertmanager's default image.
func prometheusVars(e *stages.Env, p *platform, v platformjobs.Variables, bin, amImage string) (platformjobs.Variables, error) {
	cfg := p.cfg
	hostports := func(nodes []inventory.Node, port int) []string {
		var out []string
		for _, n := range nodes {
			out = append(out, net.JoinHostPort(n.Address(), fmt.Sprint(port)))
		}
		return out
	}
	servers := p.inv.WithRole(inventory.RoleServer)
	clients := p.inv.ClientsOnly()
	// The servers that are not clients run node-exporter as a service (the
	// nomad stage's role), out of the clients' system job's reach.
	var exporters []monitoring.NodeTarget
	if cfg.Jobs.NodeExporter.Enabled {
		for _, n := range servers {
			if !n.Has(inventory.RoleClient) {
				exporters = append(exporters, monitoring.NodeTarget{Node: n.Name, Target: net.JoinHostPort(n.Address(), fmt.Sprint(stages.NodeExporterPort))})
			}
		}
	}
	// Each group verifies the name of its role, not the target's address
	// (a client node's certificate may carry any address).
	nomadHTTP := func(name string) monitoring.HTTPClient {
		return monitoring.HTTPClient{TokenFile: platformjobs.PrometheusNomadTokenFile, CAFile: platformjobs.PrometheusCAFile("nomad"), ServerName: name}
	}
	consulHTTP := func(name string) monitoring.HTTPClient {
		return monitoring.HTTPClient{TokenFile: platformjobs.PrometheusConsulTokenFile, CAFile: platformjobs.PrometheusCAFile("consul"), ServerName: name}
	}
	consulServers := consulHTTP(e.ConsulServerName())
	// The client agents are found through the service each Nomad client
	// registers in Consul, so that adding or removing a client leaves
	// prometheus.yml as it is: no new Prometheus allocation, no gap in its
	// scrapes. Nodes that are servers too are scraped with the servers.
	var nomadClients, consulClients monitoring.Endpoint
	if len(clients) > 0 {
		var except []string
		for _, n := range servers {
			except = append(except, n.Address())
		}
		nomadClients = monitoring.Endpoint{Service: "nomad-client", Port: stages.NomadHTTPPort, Except: except, HTTP: nomadHTTP(apitls.NomadClientName(cfg.Region))}
		consulClients = monitoring.Endpoint{Service: "nomad-client", Port: stages.ConsulHTTPSPort, Except: except, HTTP: consulHTTP(apitls.ConsulClientName(cfg.Datacenter, cfg.Consul.Domain))}
	}
	yml, err := monitoring.RenderPrometheus(monitoring.PrometheusConfig{
		ScrapeInterval: cfg.Monitoring.ScrapeInterval,
		ExternalLabels: map[string]string{"platform": cfg.Name, "datacenter": cfg.Datacenter},
		NomadServers:   monitoring.Endpoint{Targets: hostports(servers, stages.NomadHTTPPort), HTTP: nomadHTTP(e.NomadServerName())},
		NomadClients:   nomadClients,
		Consul:         monitoring.Endpoint{Targets: hostports(servers, stages.ConsulHTTPSPort), HTTP: consulServers},
		ConsulClients:  consulClients,
		Vault: monitoring.Endpoint{Targets: hostports(p.inv.WithRole(inventory.RoleVault), 8200),
			HTTP: monitoring.HTTPClient{TokenFile: platformjobs.PrometheusVaultTokenFile, CAFile: platformjobs.PrometheusCAFile("vault"), ServerName: apitls.VaultServerName}},
		NodeExporters: exporters,
		// Any agent serves the catalog; the servers are the stable ones.
		ConsulSD:      monitoring.ConsulSD{Servers: hostports(servers, stages.ConsulHTTPSPort), Datacenter: cfg.Datacenter, HTTP: consulServers},
		AppNamespaces: cfg.Nomad.Namespaces,
	})
	if err != nil {
		return nil, fmt.Errorf("prometheus.yml: %w", err)
	}
	leaf, err := config.ParseDuration(cfg.PKI.LeafTTL)
	if err != nil {
		return nil, err
	}
	rules, err := monitoring.RenderRules(monitoring.RulesConfig{CertExpiry: monitoring.CertExpiryFor(leaf)})
	if err != nil {
		return nil, fmt.Errorf("alert rules: %w", err)
	}
	am, err := monitoring.RenderAlertmanager(monitoring.AlertmanagerConfig{WebhookURL: cfg.Monitoring.AlertWebhookURL})
	if err != nil {
		return nil, fmt.Errorf("alertmanager.yml: %w", err)
	}
	cas := map[string]string{}
	for name, file := range map[string]string{"consul": e.CAFile("consul"), "nomad": e.CAFile("nomad"), "vault": e.State.Output(stages.OutVaultCACert)} {
		pem, err := rootCA(file)
		if err != nil {
			return nil, err
		}
		cas[name] = pem
	}
	v["count"] = cfg.Jobs.Prometheus.Count
	v["prometheus_yml"] = string(yml)
	v["rules"] = rules
	v["alertmanager_yml"] = string(am)
	v["ca_pems"] = cas
	v["retention"] = cfg.Monitoring.Retention
	v["vault_role"] = prometheusRole
	amJob := cfg.Jobs.Alertmanager
	v["alertmanager_enabled"] = amJob.Enabled
	v["alertmanager_cpu"] = amJob.CPU
	v["alertmanager_memory"] = amJob.Memory
	if cfg.JobsDriver() == "docker" {
		v["alertmanager_image"] = cmp.Or(amJob.Image, amImage)
	} else {
		v["alertmanager_binary"] = filepath.Join(bin, "alertmanager")
		// The TSDB outlives the allocation: on the local provider a
		// directory in the state directory, which every client sees; on
		// machines the directory of the client's prometheus-data host
		// volume (the nomad role's node meta), on its data volume if it has
		// one.
		v["data_dir"] = e.Path("volumes", "prometheus")
		if cfg.Provider.Local == nil {
			v["data_dir"] = "${meta.prometheus_data}"
		}
	}
	for _, n := range p.inv.WithRole(inventory.RoleClient) {
		if n.DataDevice != "" {
			v["data_volume"] = true
		}
	}
	return v, nil
}

// Plan compares every platform job, its secrets in Vault and Vault's role
// for Prometheus with what exists.
func (s *Stage) Plan(ctx context.Context, e *stages.Env) ([]stages.Change, error) {
	pl := e.Plan(false)
	if err := converge(ctx, e, pl); err != nil {
		return stages.WithKnown(nil, err, func() []stages.Change { return knownChanges(e.Config) })
	}
	return pl.Changes, nil
}

// knownChanges are the jobs a first run registers, as the configuration
// enables them (the order of wanted): shown while the stage waits for Nomad.
func knownChanges(cfg *config.Platform) []stages.Change {
	var out []stages.Change
	add := func(on bool, name string) {
		if on {
			out = append(out, stages.Change{Action: reconcile.Create, Target: "job " + platformjobs.Namespace + "/" + name})
		}
	}
	add(cfg.Jobs.NodeExporter.Enabled, platformjobs.NodeExporter)
	add(cfg.Jobs.Fabio.Enabled, platformjobs.Fabio)
	add(cfg.Jobs.Prometheus.Enabled, platformjobs.Prometheus)
	add(cfg.Jobs.Grafana.Enabled, platformjobs.Grafana)
	add(cfg.GitLabRunner != nil, platformjobs.GitLabRunner)
	return out
}

// Apply writes the secrets and Vault role, registers the jobs that differ
// and waits for each to be healthy.
func (s *Stage) Apply(ctx context.Context, e *stages.Env) error {
	return converge(ctx, e, e.Plan(true))
}

// converge is Plan and Apply: one code path finds what differs and, when
// pl applies, changes it.
func converge(ctx context.Context, e *stages.Env, pl *reconcile.Plan) error {
	p, err := load(ctx, e)
	if err != nil {
		return err
	}
	specs, err := wanted(e, p)
	if err != nil {
		return err
	}
	if err := convergeVault(ctx, p, pl); err != nil {
		return err
	}
	// Every job is registered (or restarted) first, then all are awaited
	// together: none depends on another being healthy.
	for _, sp := range specs {
		if err := convergeJob(ctx, p, pl, sp); err != nil {
			return err
		}
	}
	if pl.Apply {
		if err := waitAll(ctx, e, p, specs); err != nil {
			return err
		}
	}
	stale, err := staleJobs(ctx, p, specs)
	if err != nil {
		return err
	}
	for _, id := range stale {
		if err := pl.Do(reconcile.Stop, "job "+id, "disabled in the configuration", func() error { return stopJob(ctx, p, id) }); err != nil {
			return err
		}
	}
	if err := deleteRetired(ctx, e, p, pl); err != nil {
		return err
	}
	return setOutputs(e, p)
}

// setOutputs records where users reach the services: through the first
// client's Fabio. The addresses of services the configuration disables are
// removed, so that a disabled service is not shown as reachable.
func setOutputs(e *stages.Env, p *platform) error {
	gone := []string{stages.OutFabioAddr, stages.OutFabioUIAddr, stages.OutPrometheusAddr, stages.OutAlertmanagerAddr, stages.OutGrafanaAddr}
	for _, ns := range p.cfg.Nomad.Namespaces {
		gone = append(gone, stages.OutFabioAppAddr(ns))
	}
	clients := p.inv.WithRole(inventory.RoleClient)
	if len(clients) == 0 || !p.cfg.Jobs.Fabio.Enabled {
		return e.State.DeleteOutputs(gone...)
	}
	// Fabio listens on the clients' private addresses, and on their public
	// ones only where the ingress block says so.
	c := clients[0]
	in := p.cfg.Ingress
	fabio := "http://" + net.JoinHostPort(c.PrivateIP, fmt.Sprint(FabioPort))
	if in != nil && in.Platform && c.PublicIP != "" {
		fabio = "http://" + net.JoinHostPort(c.PublicIP, fmt.Sprint(FabioPort))
	}
	outs := map[string]string{
		stages.OutFabioAddr:   fabio,
		stages.OutFabioUIAddr: "http://" + net.JoinHostPort(c.PrivateIP, fmt.Sprint(FabioUIPort)),
	}
	if p.cfg.Jobs.Prometheus.Enabled {
		outs[stages.OutPrometheusAddr] = fabio + "/prometheus"
		if p.cfg.Jobs.Alertmanager.Enabled {
			outs[stages.OutAlertmanagerAddr] = fabio + "/alertmanager"
		}
	}
	if p.cfg.Jobs.Grafana.Enabled {
		outs[stages.OutGrafanaAddr] = fabio + "/grafana"
	}
	for i, ns := range p.cfg.Nomad.Namespaces {
		outs[stages.OutFabioAppAddr(ns)] = "http://" + net.JoinHostPort(c.PrivateIP, fmt.Sprint(FabioAppPort(i)))
		if in != nil && in.Namespace == ns && c.PublicIP != "" {
			outs[stages.OutFabioAppAddr(ns)] = publicURL(c.PublicIP, in)
		}
	}
	keys := make([]string, 0, len(outs))
	for k := range outs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := e.State.SetOutput(k, outs[k]); err != nil {
			return err
		}
	}
	gone = slices.DeleteFunc(gone, func(k string) bool { _, ok := outs[k]; return ok })
	return e.State.DeleteOutputs(gone...)
}

// Destroy stops every platform job (for down): their tasks must end before
// the nodes are stopped, or raw_exec tasks would outlive their clients.
func (s *Stage) Destroy(ctx context.Context, e *stages.Env) error {
	nc, err := managementClient(e)
	if nc == nil || err != nil {
		return err
	}
	p := &platform{cfg: e.Config, nomad: nc}
	jobs, _, err := nc.Jobs().List((&nomadapi.QueryOptions{Namespace: "*"}).WithContext(ctx))
	if err != nil {
		// A platform whose Nomad is already gone has nothing to stop.
		e.Warnf("nomad does not answer (%v); jobs are not stopped one by one", err)
		return nil
	}
	// Every job is stopped at once: each waits for its own allocations.
	var running []*nomadapi.JobListStub
	for _, j := range jobs {
		if j.Status != "dead" {
			e.Step("stopping job %s/%s", j.Namespace, j.ID)
			running = append(running, j)
		}
	}
	return parallel.Each(running, func(j *nomadapi.JobListStub) error {
		return stopJobIn(ctx, p, j.Namespace, j.ID)
	})
}

// Status reports whether each platform job runs healthy.
func (s *Stage) Status(ctx context.Context, e *stages.Env) ([]stages.StatusLine, error) {
	nc, err := managementClient(e)
	if nc == nil || err != nil {
		return nil, err
	}
	list, _, err := nc.Jobs().List((&nomadapi.QueryOptions{Namespace: platformjobs.Namespace}).WithContext(ctx))
	if err != nil {
		// The nomad stage's lines already say Nomad is down.
		return nil, nil
	}
	var out []stages.StatusLine
	for _, j := range list {
		if !slices.Contains(platformjobs.Names(), j.ID) {
			continue
		}
		l := stages.StatusLine{Component: "job", Node: j.ID, State: j.Status}
		if j.Status != "dead" {
			h, err := nomadjob.Check(ctx, nc, platformjobs.Namespace, j.ID)
			if err != nil {
				return out, err
			}
			l.Detail, l.Healthy = h.Status, h.Healthy
			switch {
			case h.Healthy:
				l.State = "healthy"
			case h.Failed:
				l.State = "failed"
			default:
				l.State = "starting"
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// managementClient is a Nomad client with the management token, or nil
// before the nomad stage has run.
func managementClient(e *stages.Env) (*nomadapi.Client, error) {
	if e.State.Output(stages.OutNomadAddr) == "" {
		return nil, nil
	}
	mgmt, ok, err := e.Secrets.Get(stages.SecretNomadBootstrapToken)
	if err != nil || !ok {
		return nil, err
	}
	return cluster.NomadServer(e, strings.TrimSpace(mgmt))
}

func password() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b), nil
}

// publicURL is the address users type: the port only when it is not HTTP's.
func publicURL(ip string, in *config.Ingress) string {
	scheme, port, std := "http", in.Port, 80
	if in.TLS != nil {
		scheme, port, std = "https", in.TLS.Port, 443
	}
	host := net.JoinHostPort(ip, fmt.Sprint(port))
	if port == std {
		host = strings.TrimSuffix(host, fmt.Sprintf(":%d", std))
	}
	return scheme + "://" + host
}
