package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/nomadjob"
	"github.com/platform-bootstrap/bootstrap/internal/parallel"
	platformjobs "github.com/platform-bootstrap/bootstrap/jobs"
	"github.com/platform-bootstrap/bootstrap/monitoring"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// jobs is the jobs stage's work: the jobs' secrets in Vault KV, the policy
// and JWT role of Prometheus, then every platform job parsed, registered
// and awaited at once until healthy (nomadjob.Check, the stage's own test
// of health).
func (p *platform) jobs(ctx context.Context) error {
	vc, err := p.vaultClient(ctx)
	if err != nil {
		return err
	}
	nc, err := cluster.NomadServer(p.e, p.nomadMgmt)
	if err != nil {
		return err
	}
	get := func(name string) string { v, _, _ := p.e.Secrets.Get(name); return v }
	pw, err := password()
	if err != nil {
		return err
	}
	if err := p.e.Secrets.Put(stages.SecretGrafanaAdminPassword, pw); err != nil {
		return err
	}
	kv := map[string]map[string]string{
		"general/fabio/consul":      {"token": get(stages.SecretConsulFabioToken)},
		"general/prometheus/tokens": {"consul": get(stages.SecretConsulPrometheusToken), "nomad": get(stages.SecretNomadPrometheusToken)},
		"general/grafana/admin":     {"password": pw},
	}
	for _, ns := range p.e.Config.Nomad.Namespaces {
		kv["general/fabio/consul-"+ns] = map[string]string{"token": get(stages.SecretConsulFabioNamespaceToken(ns))}
	}
	var work []func() error
	for path, fields := range kv {
		work = append(work, func() error {
			data := map[string]any{}
			for k, v := range fields {
				data[k] = v
			}
			_, err := vc.Logical().WriteWithContext(ctx, "secret/data/"+path, map[string]any{"data": data})
			return err
		})
	}
	work = append(work, func() error {
		if err := vc.Sys().PutPolicyWithContext(ctx, "prometheus-metrics", "path \"sys/metrics\" {\n  capabilities = [\"read\"]\n}\n"); err != nil {
			return err
		}
		_, err := vc.Logical().WriteWithContext(ctx, "auth/jwt-nomad/role/prometheus", map[string]any{
			"role_type": "jwt", "bound_audiences": []string{"vault.io"},
			"bound_claims": map[string]any{"nomad_namespace": platformjobs.Namespace, "nomad_job_id": platformjobs.Prometheus},
			"user_claim":   "/nomad_job_id", "user_claim_json_pointer": true,
			"claim_mappings": map[string]any{"nomad_namespace": "nomad_namespace", "nomad_job_id": "nomad_job_id", "nomad_task": "nomad_task"},
			"token_type":     "service", "token_policies": []string{pki.PolicyNomadWorkloads, "prometheus-metrics"}, "token_period": 1800,
		})
		return err
	})
	specs, err := p.jobSpecs()
	if err != nil {
		return err
	}
	parsed := make([]*nomadapi.Job, len(specs))
	for i, sp := range specs {
		work = append(work, func() error {
			src, err := platformjobs.File(sp.name)
			if err != nil {
				return err
			}
			vars, err := sp.vars.Encode()
			if err != nil {
				return err
			}
			job, err := nc.Jobs().ParseHCLOpts(&nomadapi.JobsParseRequest{JobHCL: src, Variables: vars, Canonicalize: true})
			if err != nil {
				return fmt.Errorf("job %s: parse: %w", sp.name, err)
			}
			ns := platformjobs.Namespace
			job.Namespace = &ns
			parsed[i] = job
			return nil
		})
	}
	if err := parallel.Do(work...); err != nil {
		return err
	}
	work = work[:0]
	start := time.Now()
	for _, job := range parsed {
		work = append(work, func() error {
			if _, _, err := nc.Jobs().Register(job, (&nomadapi.WriteOptions{Namespace: platformjobs.Namespace}).WithContext(ctx)); err != nil {
				return fmt.Errorf("job %s: register: %w", *job.ID, err)
			}
			err := poll(ctx, 250*time.Millisecond, func() error {
				h, err := nomadjob.Check(ctx, nc, platformjobs.Namespace, *job.ID)
				switch {
				case err != nil:
					return err
				case h.Failed:
					return fmt.Errorf("job %s failed: %s", *job.ID, h.Status)
				case !h.Healthy:
					return fmt.Errorf("job %s: %s", *job.ID, h.Status)
				}
				return nil
			})
			if err == nil {
				fmt.Fprintf(os.Stderr, "floor: job %s healthy after %.1fs\n", *job.ID, time.Since(start).Seconds())
			}
			return err
		})
	}
	return parallel.Do(work...)
}

// spec is one platform job and its variables.
type spec struct {
	name string
	vars platformjobs.Variables
}

// jobSpecs are the jobs and variables of stages/jobs wanted() and
// prometheusVars() with the defaults: the raw_exec driver and the
// binaries of bin_dir (unexported there; keep in step).
func (p *platform) jobSpecs() ([]spec, error) {
	cfg := p.e.Config
	bin := p.bin
	base := func(j config.Job, binary string) platformjobs.Variables {
		return platformjobs.Variables{"driver": "raw_exec", "datacenters": []string{cfg.Datacenter}, "cpu": j.CPU, "memory": j.Memory, "binary": filepath.Join(bin, binary)}
	}
	consulCA, err := os.ReadFile(p.e.CAFile("consul"))
	if err != nil {
		return nil, err
	}
	var out []spec
	out = append(out, spec{platformjobs.NodeExporter, base(cfg.Jobs.NodeExporter, "prometheus-node-exporter")})

	v := base(cfg.Jobs.Fabio, "fabio")
	v["consul_ca_pem"] = string(consulCA)
	v["proxy_port"] = 9999
	v["ui_port"] = 9998
	var apps []map[string]any
	for i, ns := range cfg.Nomad.Namespaces {
		apps = append(apps, map[string]any{"namespace": ns, "port": 10001 + i})
	}
	v["app_listeners"] = apps
	out = append(out, spec{platformjobs.Fabio, v})

	v, err = p.prometheusVars(base(cfg.Jobs.Prometheus, "prometheus"))
	if err != nil {
		return nil, err
	}
	out = append(out, spec{platformjobs.Prometheus, v})

	v = base(cfg.Jobs.Grafana, "grafana")
	v["count"] = cfg.Jobs.Grafana.Count
	v["datasources_yml"] = string(monitoring.GrafanaDatasources())
	v["dashboards_yml"] = string(monitoring.GrafanaDashboardProvider())
	v["dashboards"] = monitoring.Dashboards()
	v["scrape_interval"] = cfg.Monitoring.ScrapeInterval
	home, err := filepath.EvalSymlinks(filepath.Join(bin, "grafana-home"))
	if err != nil {
		return nil, fmt.Errorf("grafana's home: %w", err)
	}
	v["homepath"] = home
	out = append(out, spec{platformjobs.Grafana, v})
	return out, nil
}

func (p *platform) prometheusVars(v platformjobs.Variables) (platformjobs.Variables, error) {
	cfg, e := p.e.Config, p.e
	hostports := func(nodes []inventory.Node, port int) []string {
		var out []string
		for _, n := range nodes {
			out = append(out, net.JoinHostPort(n.Address(), fmt.Sprint(port)))
		}
		return out
	}
	servers := p.inv.WithRole(inventory.RoleServer)
	clients := p.inv.WithRole(inventory.RoleClient)
	nomadHTTP := func(name string) monitoring.HTTPClient {
		return monitoring.HTTPClient{TokenFile: platformjobs.PrometheusNomadTokenFile, CAFile: platformjobs.PrometheusCAFile("nomad"), ServerName: name}
	}
	consulHTTP := func(name string) monitoring.HTTPClient {
		return monitoring.HTTPClient{TokenFile: platformjobs.PrometheusConsulTokenFile, CAFile: platformjobs.PrometheusCAFile("consul"), ServerName: name}
	}
	consulServers := consulHTTP(e.ConsulServerName())
	yml, err := monitoring.RenderPrometheus(monitoring.PrometheusConfig{
		ScrapeInterval: cfg.Monitoring.ScrapeInterval,
		ExternalLabels: map[string]string{"platform": cfg.Name, "datacenter": cfg.Datacenter},
		NomadServers:   monitoring.Endpoint{Targets: hostports(servers, stages.NomadHTTPPort), HTTP: nomadHTTP(e.NomadServerName())},
		NomadClients:   monitoring.Endpoint{Targets: hostports(clients, stages.NomadHTTPPort), HTTP: nomadHTTP(apitls.NomadClientName(cfg.Region))},
		Consul:         monitoring.Endpoint{Targets: hostports(servers, stages.ConsulHTTPSPort), HTTP: consulServers},
		ConsulClients:  monitoring.Endpoint{Targets: hostports(clients, stages.ConsulHTTPSPort), HTTP: consulHTTP(apitls.ConsulClientName(cfg.Datacenter, cfg.Consul.Domain))},
		Vault: monitoring.Endpoint{Targets: hostports(p.inv.WithRole(inventory.RoleVault), 8200),
			HTTP: monitoring.HTTPClient{TokenFile: platformjobs.PrometheusVaultTokenFile, CAFile: platformjobs.PrometheusCAFile("vault"), ServerName: apitls.VaultServerName}},
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
		return nil, err
	}
	am, err := monitoring.RenderAlertmanager(monitoring.AlertmanagerConfig{WebhookURL: cfg.Monitoring.AlertWebhookURL})
	if err != nil {
		return nil, err
	}
	cas := map[string]string{}
	for name, file := range map[string]string{"consul": e.CAFile("consul"), "nomad": e.CAFile("nomad"), "vault": e.State.Output(stages.OutVaultCACert)} {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		cas[name] = string(b)
	}
	am2 := cfg.Jobs.Alertmanager
	v["count"] = cfg.Jobs.Prometheus.Count
	v["prometheus_yml"] = string(yml)
	v["rules"] = rules
	v["alertmanager_yml"] = string(am)
	v["ca_pems"] = cas
	v["retention"] = cfg.Monitoring.Retention
	v["vault_role"] = "prometheus"
	v["alertmanager_enabled"] = am2.Enabled
	v["alertmanager_cpu"] = am2.CPU
	v["alertmanager_memory"] = am2.Memory
	v["alertmanager_binary"] = filepath.Join(p.bin, "alertmanager")
	v["data_dir"] = e.Path("volumes", "prometheus")
	return v, nil
}

// password is the jobs stage's Grafana admin password: 24 characters.
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
