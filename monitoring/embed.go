// Package monitoring holds the monitoring artifacts the platform jobs run
// with: prometheus.yml, the alert rules, alertmanager.yml and Grafana's
// provisioning (datasource, dashboard provider, dashboards), embedded in the
// binary, and the functions that render them for the jobs stage.
//
// Everything is rendered here, in Go, to plain text the jobs stage passes to
// the Nomad jobs as variables; the jobs write it with template stanzas whose
// delimiters are changed so consul-template leaves it alone. Secrets never
// appear in these files: they name token files that the jobs write from
// Vault.
package monitoring

import "embed"

//go:embed prometheus.yml.tmpl alertmanager.yml.tmpl rules/*.yml grafana/*.yml grafana/dashboards/*.json
var files embed.FS
