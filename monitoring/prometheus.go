package monitoring

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"text/template"
)

// PrometheusConfig is what prometheus.yml is rendered from.
//
// prometheus.yml is rendered here, in Go, rather than by the Nomad job's
// template stanza (consul-template): the result is a plain file that the
// tests check with the real promtool, the jobs stage can diff it, and it
// holds no secret (tokens are files the job writes from Vault, named here by
// path). Discovery that must follow the cluster live is left to Prometheus'
// own consul_sd_configs, not to consul-template.
type PrometheusConfig struct {
	ScrapeInterval     string // default 15s
	EvaluationInterval string // default: ScrapeInterval
	ExternalLabels     map[string]string
	// RuleFiles are globs, relative to prometheus.yml's directory
	// (default: rules/*.yml).
	RuleFiles []string

	// The HashiCorp agents, scraped over their HTTP APIs. A group with no
	// targets is left out. Servers and clients present different names
	// (server.<region>.nomad, client.<region>.nomad; likewise for Consul),
	// so each group has its own HTTP.ServerName: verified instead of the
	// target's address, it keeps a client node's certificate from passing
	// for a server's.
	NomadServers Endpoint
	NomadClients Endpoint
	// Consul holds the Consul servers, or every agent when ConsulClients
	// is empty. The client agents' job is "consul-client", relabelled
	// job="consul" so that rules and dashboards see every agent as before.
	Consul        Endpoint
	ConsulClients Endpoint
	Vault         Endpoint

	// NodeExporters are the node-exporters of the nodes that are not
	// Nomad clients (the servers, which run it as a service of their own);
	// the clients' node-exporter job registers its instances in Consul.
	NodeExporters []NodeTarget

	// ConsulSD are the Consul agents Prometheus discovers services through.
	ConsulSD ConsulSD

	// AppNamespaces are the untrusted application namespaces: their
	// services ("<namespace>-…") are only scraped on the address of the
	// node that registered them, so an application cannot point the
	// platform's Prometheus at any other host.
	AppNamespaces []string

	// Alertmanagers are static host:port targets; when empty, every healthy
	// instance of the Consul service AlertmanagerService is used.
	Alertmanagers          []string
	AlertmanagerService    string // default alertmanager
	AlertmanagerPathPrefix string // Alertmanager's --web.route-prefix (default /alertmanager)
}

// Endpoint is a group of HashiCorp agents scraped the same way: Targets,
// or, when Service is set, the nodes Consul lists an instance of that
// service on (through ConsulSD), on Port, less the hosts in Except. Agents
// that come and go with the platform's size are discovered so, and adding
// a node leaves prometheus.yml, and so the Prometheus job, as it was.
type Endpoint struct {
	Targets []string // host:port
	Service string
	Port    int
	Except  []string // hosts
	Scheme  string   // default https
	HTTP    HTTPClient
}

// HTTPClient says how Prometheus authenticates a server and itself.
type HTTPClient struct {
	// TokenFile holds an ACL token sent as "Authorization: Bearer", which
	// Nomad, Consul and Vault all accept. Empty: no token.
	TokenFile string
	CAFile    string
	// CertFile and KeyFile are a client certificate, for agents that verify
	// incoming HTTPS clients.
	CertFile string
	KeyFile  string
	// ServerName is the name verified in the servers' certificates when it
	// is not the target's address (e.g. server.global.nomad).
	ServerName string
}

// NodeTarget is a node's scrape target (host:port), labelled with its name
// as the targets Prometheus finds through Consul are.
type NodeTarget struct {
	Node, Target string
}

// ConsulSD are the Consul agents used for service discovery.
type ConsulSD struct {
	// Servers are host:port of agents (at least one). Prometheus asks each,
	// so discovery survives any of them being down; a target found through
	// several is scraped once.
	Servers    []string
	Scheme     string // default https
	Datacenter string
	HTTP       HTTPClient
	// Tag marks the services to scrape (default prometheus).
	Tag string
}

// endpoint is one scrape job of the template for agents.
type endpoint struct {
	Job, Path, Scheme string
	// JobLabel, when set, replaces Job as the series' job label.
	JobLabel string
	Targets  []string
	// Service, Port and Except: see Endpoint. ExceptRegex matches the
	// hosts of Except.
	Service     string
	Port        int
	ExceptRegex string
	HTTP        HTTPClient
}

var (
	durationRe = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)
	labelRe    = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	tagRe      = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)
)

// RenderPrometheus renders prometheus.yml.
func RenderPrometheus(c PrometheusConfig) ([]byte, error) {
	c = c.withDefaults()
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("prometheus.yml: %w", err)
	}
	data := struct {
		PrometheusConfig
		Endpoints []endpoint
	}{PrometheusConfig: c}
	for _, e := range []struct {
		job, label, path string
		ep               Endpoint
	}{
		{"nomad-server", "", "/v1/metrics", c.NomadServers},
		{"nomad-client", "", "/v1/metrics", c.NomadClients},
		{"consul", "", "/v1/agent/metrics", c.Consul},
		{"consul-client", "consul", "/v1/agent/metrics", c.ConsulClients},
		{"vault", "", "/v1/sys/metrics", c.Vault},
	} {
		if len(e.ep.Targets) == 0 && e.ep.Service == "" {
			continue
		}
		ep := endpoint{Job: e.job, JobLabel: e.label, Path: e.path, Scheme: e.ep.Scheme, Targets: e.ep.Targets, Service: e.ep.Service, Port: e.ep.Port, HTTP: e.ep.HTTP}
		if len(e.ep.Except) > 0 {
			hosts := make([]string, len(e.ep.Except))
			for i, h := range e.ep.Except {
				hosts[i] = regexp.QuoteMeta(h)
			}
			ep.ExceptRegex = strings.Join(hosts, "|")
		}
		data.Endpoints = append(data.Endpoints, ep)
	}
	return execute("prometheus.yml.tmpl", data)
}

func (c PrometheusConfig) withDefaults() PrometheusConfig {
	if c.ScrapeInterval == "" {
		c.ScrapeInterval = "15s"
	}
	if c.EvaluationInterval == "" {
		c.EvaluationInterval = c.ScrapeInterval
	}
	if len(c.RuleFiles) == 0 {
		c.RuleFiles = []string{"rules/*.yml"}
	}
	for _, e := range []*Endpoint{&c.NomadServers, &c.NomadClients, &c.Consul, &c.ConsulClients, &c.Vault} {
		if e.Scheme == "" {
			e.Scheme = "https"
		}
	}
	if c.ConsulSD.Scheme == "" {
		c.ConsulSD.Scheme = "https"
	}
	if c.ConsulSD.Tag == "" {
		c.ConsulSD.Tag = "prometheus"
	}
	if c.AlertmanagerService == "" {
		c.AlertmanagerService = "alertmanager"
	}
	if c.AlertmanagerPathPrefix == "" {
		c.AlertmanagerPathPrefix = "/alertmanager"
	}
	return c
}

func (c PrometheusConfig) validate() error {
	var errs []error
	for name, d := range map[string]string{"scrape interval": c.ScrapeInterval, "evaluation interval": c.EvaluationInterval} {
		if !durationRe.MatchString(d) {
			errs = append(errs, fmt.Errorf("%s %q is not a duration like 15s or 1m", name, d))
		}
	}
	for k := range c.ExternalLabels {
		if !labelRe.MatchString(k) {
			errs = append(errs, fmt.Errorf("external label name %q: use letters, digits and _", k))
		}
	}
	for name, e := range map[string]Endpoint{"nomad servers": c.NomadServers, "nomad clients": c.NomadClients, "consul": c.Consul, "consul clients": c.ConsulClients, "vault": c.Vault} {
		errs = append(errs, checkScheme(name, e.Scheme), checkHostPorts(name, e.Targets), checkServerName(name, e.HTTP.ServerName))
		switch {
		case e.Service != "" && len(e.Targets) > 0:
			errs = append(errs, fmt.Errorf("%s: both targets and a Consul service to discover them", name))
		case e.Service != "" && !tagRe.MatchString(e.Service):
			errs = append(errs, fmt.Errorf("%s: service name %q: use letters, digits, '.', '_' and '-'", name, e.Service))
		case e.Service != "" && (e.Port < 1 || e.Port > 65535):
			errs = append(errs, fmt.Errorf("%s: port %d is not a TCP port", name, e.Port))
		}
	}
	errs = append(errs, checkServerName("consul service discovery", c.ConsulSD.HTTP.ServerName))
	for _, n := range c.NodeExporters {
		errs = append(errs, checkHostPorts("node exporter of "+n.Node, []string{n.Target}))
	}
	errs = append(errs, checkHostPorts("alertmanagers", c.Alertmanagers))
	if len(c.ConsulSD.Servers) == 0 {
		errs = append(errs, errors.New("no Consul server for service discovery is set"))
	}
	errs = append(errs, checkHostPorts("consul service discovery", c.ConsulSD.Servers))
	errs = append(errs, checkScheme("consul service discovery", c.ConsulSD.Scheme))
	if !tagRe.MatchString(c.ConsulSD.Tag) {
		errs = append(errs, fmt.Errorf("service tag %q: use letters, digits, '.', '_' and '-'", c.ConsulSD.Tag))
	}
	if !strings.HasPrefix(c.AlertmanagerPathPrefix, "/") {
		errs = append(errs, fmt.Errorf("alertmanager path prefix %q must start with /", c.AlertmanagerPathPrefix))
	}
	return errors.Join(errs...)
}

func checkScheme(name, s string) error {
	if s != "http" && s != "https" {
		return fmt.Errorf("%s: scheme %q is neither http nor https", name, s)
	}
	return nil
}

// serverNameRe is a DNS name as the platform's certificates carry them.
var serverNameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

func checkServerName(name, s string) error {
	if s != "" && !serverNameRe.MatchString(s) {
		return fmt.Errorf("%s: TLS server name %q is not a DNS name", name, s)
	}
	return nil
}

func checkHostPorts(name string, targets []string) error {
	for _, t := range targets {
		if _, _, err := net.SplitHostPort(t); err != nil {
			return fmt.Errorf("%s: target %q is not host:port", name, t)
		}
	}
	return nil
}

// yamlLines writes key: value lines at an indentation; values are quoted.
type yamlLines struct {
	b      strings.Builder
	indent int
}

func (y *yamlLines) line(depth int, key string, value ...string) {
	if y.b.Len() > 0 {
		y.b.WriteByte('\n')
	}
	y.b.WriteString(strings.Repeat(" ", y.indent+2*depth))
	y.b.WriteString(key + ":")
	if len(value) > 0 {
		y.b.WriteString(" " + quote(value[0]))
	}
}

func (h HTTPClient) lines(y *yamlLines) {
	if h.TokenFile != "" {
		y.line(0, "authorization")
		y.line(1, "credentials_file", h.TokenFile)
	}
	if h.CAFile == "" && h.CertFile == "" && h.ServerName == "" {
		return
	}
	y.line(0, "tls_config")
	for _, kv := range [][2]string{{"ca_file", h.CAFile}, {"cert_file", h.CertFile}, {"key_file", h.KeyFile}, {"server_name", h.ServerName}} {
		if kv[1] != "" {
			y.line(1, kv[0], kv[1])
		}
	}
}

func httpClientYAML(h HTTPClient, indent int) string {
	y := &yamlLines{indent: indent}
	h.lines(y)
	return y.b.String()
}

func consulSDYAML(c ConsulSD, server string, indent int) string {
	y := &yamlLines{indent: indent}
	y.line(0, "server", server)
	y.line(0, "scheme", c.Scheme)
	// After each answer Prometheus waits out this interval before its next
	// blocking query (30 s by default): a new node-exporter or service was
	// a target up to 30 s late, and each day-2 up's verify waited for it.
	// Blocking queries keep the cost low when nothing changes.
	y.line(0, "refresh_interval", "5s")
	if c.Datacenter != "" {
		y.line(0, "datacenter", c.Datacenter)
	}
	c.HTTP.lines(y)
	return y.b.String()
}

// quote makes a YAML double-quoted scalar (a JSON string is one).
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func execute(name string, data any) ([]byte, error) {
	t, err := template.New(name).Option("missingkey=error").Funcs(template.FuncMap{
		"q":          quote,
		"httpClient": httpClientYAML,
		"consulSD":   consulSDYAML,
		"join":       strings.Join,
	}).ParseFS(files, name)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("render %s: %w", name, err)
	}
	return buf.Bytes(), nil
}
