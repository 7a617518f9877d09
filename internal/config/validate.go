package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/platform-bootstrap/bootstrap/internal/imagearchive"
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

func validName(s string) bool { return nameRE.MatchString(s) }

// Roles a node may have.
var knownRoles = []string{"server", "client", "vault"}

// MaxLocalNodes bounds the local provider: every node is a handful of real
// processes on this one machine.
const MaxLocalNodes = 32

type validator struct {
	diags hcl.Diagnostics
	p     *Platform
	in    *secretInputs
}

func (v *validator) errorf(rng hcl.Range, summary, format string, args ...any) {
	if rng.Filename == "" {
		rng = v.p.Provider.DefRange
	}
	if v.in.covers(rng) {
		// The value comes from env() or file(): say what is wrong with it
		// without printing it.
		args = v.in.hide(args)
	}
	v.diags = append(v.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  rng.Ptr(),
	})
}

// warnf reports a setting that is valid but has no effect here.
func (v *validator) warnf(rng hcl.Range, summary, format string, args ...any) {
	v.errorf(rng, summary, format, args...)
	v.diags[len(v.diags)-1].Severity = hcl.DiagWarning
}

// or returns r, or fallback when r is unset (the attribute was not written).
func or(r, fallback hcl.Range) hcl.Range {
	if r.Filename == "" {
		return fallback
	}
	return r
}

func validate(p *Platform, in *secretInputs) hcl.Diagnostics {
	v := &validator{p: p, in: in}
	switch p.Provider.Type {
	case "local":
		v.local(p.Provider.Local)
	case "static":
		v.static(p.Provider.Static)
	case "terraform":
		v.terraform(p.Provider.Terraform)
	}
	v.vault()
	v.pki()
	v.consul()
	v.nomad()
	v.jobs()
	v.monitoring()
	v.gitlab()
	v.ingress()
	v.docker()
	return v.diags
}

func (v *validator) local(l *LocalProvider) {
	def := v.p.Provider.DefRange
	if l.Servers < 1 || l.Servers%2 == 0 || l.Servers > 7 {
		v.errorf(or(l.ServersRange, def), "Invalid number of servers",
			"servers = %d: Consul, Nomad and Vault need an odd number of servers to keep a quorum; use 1, 3, 5 or 7.", l.Servers)
	}
	if l.Clients < 1 {
		v.errorf(or(l.ClientsRange, def), "Invalid number of clients",
			"clients = %d: the platform jobs need at least one client to run on; use 1 or more.", l.Clients)
	}
	if l.Servers+l.Clients > MaxLocalNodes {
		v.errorf(or(l.ClientsRange, def), "Too many local nodes",
			"%d servers + %d clients: the local provider runs at most %d nodes on one machine.", l.Servers, l.Clients, MaxLocalNodes)
	}
	pfx, err := netip.ParsePrefix(l.Subnet)
	switch {
	case err != nil:
		v.errorf(or(l.SubnetRange, def), "Invalid subnet", "subnet = %q is not a CIDR range (address/prefix length); use e.g. \"127.0.1.0/24\".", l.Subnet)
	case !pfx.Addr().Is4() || !netip.MustParsePrefix("127.0.0.0/8").Contains(pfx.Addr()) || pfx.Bits() < 8:
		v.errorf(or(l.SubnetRange, def), "Subnet is not loopback",
			"subnet = %q: local nodes only listen on loopback addresses; use a range inside 127.0.0.0/8 such as \"127.0.1.0/24\".", l.Subnet)
	case pfx.Bits() > 32-6 || 1<<(32-pfx.Bits())-2 < l.Servers+l.Clients:
		v.errorf(or(l.SubnetRange, def), "Subnet too small",
			"subnet = %q has room for fewer than %d nodes; use a /24.", l.Subnet, l.Servers+l.Clients)
	case pfx.Masked().Addr() == netip.MustParseAddr("127.0.0.0"):
		v.errorf(or(l.SubnetRange, def), "Subnet overlaps 127.0.0.1",
			"subnet = %q would give a node 127.0.0.1, where other programs on this machine listen; use \"127.0.1.0/24\" or another 127.x.y.0/24.", l.Subnet)
	}
}

func (v *validator) machines(serviceManager, installMethod, binDir string, smRange, imRange hcl.Range) {
	def := v.p.Provider.DefRange
	if serviceManager != "" && serviceManager != "systemd" && serviceManager != "process" {
		v.errorf(or(smRange, def), "Invalid service_manager", "service_manager = %q: use \"systemd\" or \"process\" (for machines without systemd).", serviceManager)
	}
	if installMethod != "" && installMethod != "apt" && installMethod != "binary" {
		v.errorf(or(imRange, def), "Invalid install_method", "install_method = %q: use \"apt\" (HashiCorp's repository) or \"binary\" (copied from bin_dir).", installMethod)
	}
	if installMethod == "binary" && binDir == "" {
		v.errorf(or(imRange, def), "Missing bin_dir", "install_method = \"binary\" copies vault, consul, nomad and consul-template from bin_dir; set bin_dir to the directory holding them.")
	}
}

func (v *validator) static(s *StaticProvider) {
	def := v.p.Provider.DefRange
	v.machines(s.ServiceManager, s.InstallMethod, s.MachineBinDir, s.ServiceManagerRange, s.InstallMethodRange)
	if (s.Inventory == "") == (len(s.Nodes) == 0) {
		v.errorf(or(s.InventoryRange, def), "Static provider needs nodes",
			"Give either inventory = \"inventory.json\" (the inventory contract) or one node \"name\" { ... } block per machine, not both.")
		return
	}
	names := map[string]bool{}
	servers, clients := 0, 0
	for _, n := range s.Nodes {
		if !validName(n.Name) {
			v.errorf(n.DefRange, "Invalid node name", "node %q: names are lowercase letters, digits and dashes.", n.Name)
		}
		if names[n.Name] {
			v.errorf(n.DefRange, "Duplicate node", "node %q is defined twice.", n.Name)
		}
		names[n.Name] = true
		for _, r := range n.Roles {
			if !slices.Contains(knownRoles, r) {
				v.errorf(n.RolesRange, "Unknown role", "node %q: role %q is not one of %s.", n.Name, r, strings.Join(knownRoles, ", "))
			}
		}
		if slices.Contains(n.Roles, "server") {
			servers++
		}
		if slices.Contains(n.Roles, "client") {
			clients++
		}
		if net.ParseIP(n.PrivateIP) == nil {
			v.errorf(n.PrivateIPRange, "Invalid private_ip", "node %q: private_ip = %q is not an IP address.", n.Name, n.PrivateIP)
		}
		if n.SSH != nil && (n.SSH.Port < 0 || n.SSH.Port > 65535) {
			v.errorf(n.SSH.PortRange, "Invalid SSH port", "node %q: port %d is not between 1 and 65535.", n.Name, n.SSH.Port)
		}
	}
	if len(s.Nodes) > 0 {
		if servers%2 == 0 {
			v.errorf(def, "Invalid number of servers", "The static inventory has %d nodes with role \"server\"; use an odd number (1, 3, 5) so the clusters keep a quorum.", servers)
		}
		if clients == 0 {
			v.errorf(def, "No client nodes", "Give at least one node the role \"client\": the platform jobs run on clients.")
		}
	}
}

func (v *validator) terraform(t *TerraformProvider) {
	v.machines(t.ServiceManager, t.InstallMethod, t.MachineBinDir, t.ServiceManagerRange, t.InstallMethodRange)
	if t.Module == "" {
		v.errorf(or(t.ModuleRange, v.p.Provider.DefRange), "Missing module", "Set module to a Terraform module directory, e.g. \"terraform/digitalocean\".")
	}
	if _, err := ParseDuration(t.SSHTimeout); err != nil {
		v.errorf(or(t.SSHTimeoutRange, v.p.Provider.DefRange), "Invalid ssh_timeout", "ssh_timeout = %q: %s. Write a duration such as \"5m\".", t.SSHTimeout, err)
	}
}

func (v *validator) vault() {
	vc := v.p.Vault
	def := or(vc.DefRange, v.p.Provider.DefRange)
	if vc.KeyShares < 1 || vc.KeyShares > 10 {
		v.errorf(or(vc.KeySharesRange, def), "Invalid key_shares", "key_shares = %d: Vault splits its unseal key into 1 to 10 shares.", vc.KeyShares)
	}
	if vc.KeyThreshold < 1 || vc.KeyThreshold > vc.KeyShares {
		what, hint := "", ""
		if vc.KeyThresholdRange.Filename == "" {
			what, hint = " (the default)", "; set key_threshold too"
		}
		v.errorf(or(vc.KeyThresholdRange, def), "Invalid key_threshold", "key_threshold = %d%s must be between 1 and key_shares (%d)%s.", vc.KeyThreshold, what, vc.KeyShares, hint)
	}
	v.pgpKeys()
	if vc.HA && len(vc.Nodes) > 0 && len(vc.Nodes)%2 == 0 {
		v.errorf(vc.NodesRange, "Invalid number of Vault nodes", "ha = true with %d nodes: raft needs an odd number (3 or 5).", len(vc.Nodes))
	}
	if !vc.HA && len(vc.Nodes) > 1 {
		v.errorf(vc.NodesRange, "Several Vault nodes without ha", "%d Vault nodes are listed but ha = false; set ha = true or list one node.", len(vc.Nodes))
	}
	if l := v.p.Provider.Local; l != nil {
		if vc.HA && l.Servers < 3 {
			v.errorf(def, "Vault HA needs three servers", "ha = true runs Vault on three servers, but the local provider has %d; set servers = 3.", l.Servers)
		}
		for _, n := range vc.Nodes {
			if !strings.HasPrefix(n, "server-") {
				v.errorf(vc.NodesRange, "Unknown Vault node", "%q is not a server of the local provider; its servers are server-1 … server-%d.", n, l.Servers)
			} else if i, err := strconv.Atoi(strings.TrimPrefix(n, "server-")); err != nil || i < 1 || i > l.Servers {
				v.errorf(vc.NodesRange, "Unknown Vault node", "%q is not a server of the local provider; its servers are server-1 … server-%d.", n, l.Servers)
			}
		}
	}
}

// pgpKeys checks vault { pgp_keys } and fills in PGPKeysB64: one key per
// unseal key share, each a PGP public key.
func (v *validator) pgpKeys() {
	vc := &v.p.Vault
	if len(vc.PGPKeys) == 0 {
		return
	}
	if len(vc.PGPKeys) != vc.KeyShares {
		what := ""
		if vc.KeySharesRange.Filename == "" {
			what = " (the default)"
		}
		v.errorf(vc.PGPKeysRange, "Wrong number of pgp_keys",
			"pgp_keys has %d key(s) but key_shares = %d%s: Vault encrypts each unseal key share to one key, so give one key per share or set key_shares = %d (and key_threshold to at most that).",
			len(vc.PGPKeys), vc.KeyShares, what, len(vc.PGPKeys))
	}
	vc.PGPKeysB64 = nil
	for i, value := range vc.PGPKeys {
		rng, read := vc.PGPKeysRange, v.in.covers(vc.PGPKeysRange)
		if i < len(vc.pgpKeyElems) {
			rng, read = vc.pgpKeyElems[i].Range, vc.pgpKeyElems[i].Read
		}
		var key string
		var err error
		if read {
			// Read with file() or env(): the value is the key, never a path.
			var ok bool
			key, ok, err = parsePGPKey([]byte(value))
			if !ok {
				err = errors.New("the value is not a PGP public key (ASCII-armored or base64); export one with `gpg --export --armor KEYID > FILE`")
			}
		} else {
			key, err = pgpKey(value, v.p.Dir)
		}
		if err != nil {
			// The message never holds the value itself: a key read with
			// file() is recorded as a secret like anything file() reads.
			v.errorf(rng, "Invalid PGP key", "pgp_keys[%d]: %s.", i, strings.TrimSuffix(err.Error(), "."))
			continue
		}
		vc.PGPKeysB64 = append(vc.PGPKeysB64, key)
	}
}

func (v *validator) ttl(s string, rng hcl.Range, what string) time.Duration {
	d, err := ParseDuration(s)
	if err != nil {
		v.errorf(rng, "Invalid "+what, "%s = %q: %s. Write a duration such as \"24h\", \"720h\" or \"30d\".", what, s, err)
		return 0
	}
	return d
}

func (v *validator) pki() {
	k := v.p.PKI
	def := v.p.Provider.DefRange
	root := v.ttl(k.RootTTL, or(k.RootTTLRange, def), "root_ttl")
	inter := v.ttl(k.IntermediateTTL, or(k.IntermediateTTLRange, def), "intermediate_ttl")
	leaf := v.ttl(k.LeafTTL, or(k.LeafTTLRange, def), "leaf_ttl")
	if root > 0 && inter > 0 && inter > root {
		v.errorf(or(k.IntermediateTTLRange, def), "Intermediate outlives root", "intermediate_ttl (%s) must not be longer than root_ttl (%s).", k.IntermediateTTL, k.RootTTL)
	}
	if leaf > 0 && inter > 0 && leaf > inter {
		v.errorf(or(k.LeafTTLRange, def), "Leaf outlives intermediate", "leaf_ttl (%s) must not be longer than intermediate_ttl (%s).", k.LeafTTL, k.IntermediateTTL)
	}
	if leaf > 0 && leaf < 2*time.Minute {
		v.errorf(or(k.LeafTTLRange, def), "Leaf TTL too short", "leaf_ttl = %q: consul-template needs time to renew certificates; use at least \"2m\".", k.LeafTTL)
	}

	reserved := []string{"consul", "nomad", "vault"}
	cas := map[string]bool{}
	for _, ca := range k.CAs {
		if !validName(ca.Name) || slices.Contains(reserved, ca.Name) {
			v.errorf(ca.DefRange, "Invalid CA name", "ca %q: use lowercase letters, digits and dashes, and not %s (used by the platform).", ca.Name, strings.Join(reserved, ", "))
		}
		if cas[ca.Name] {
			v.errorf(ca.DefRange, "Duplicate CA", "ca %q is defined twice.", ca.Name)
		}
		cas[ca.Name] = true
		if ca.TTL != "" {
			v.ttl(ca.TTL, ca.TTLRange, "ttl")
		}
		if ca.KeyType != "" && !slices.Contains([]string{"rsa", "ec", "ed25519"}, ca.KeyType) {
			v.errorf(ca.KeyTypeRange, "Invalid key_type", "key_type = %q: use \"rsa\", \"ec\" or \"ed25519\".", ca.KeyType)
		}
		inters := map[string]bool{}
		for _, in := range ca.Intermediates {
			if !validName(in.Name) || inters[in.Name] {
				v.errorf(in.DefRange, "Invalid intermediate", "intermediate %q in ca %q: names are unique lowercase letters, digits and dashes.", in.Name, ca.Name)
			}
			inters[in.Name] = true
			if in.TTL != "" {
				v.ttl(in.TTL, in.TTLRange, "ttl")
			}
		}
		roles := map[string]bool{}
		for _, r := range ca.Roles {
			if !validName(r.Name) || roles[r.Name] {
				v.errorf(r.DefRange, "Invalid role", "role %q in ca %q: names are unique lowercase letters, digits and dashes.", r.Name, ca.Name)
			}
			roles[r.Name] = true
			if r.Issuer != "" && !inters[r.Issuer] {
				v.errorf(r.IssuerRange, "Unknown issuer", "role %q: issuer %q is not an intermediate of ca %q; leave it out to issue from the root.", r.Name, r.Issuer, ca.Name)
			}
			if r.TTL != "" {
				v.ttl(r.TTL, r.TTLRange, "ttl")
			}
			if r.MaxTTL != "" {
				v.ttl(r.MaxTTL, r.MaxTTLRange, "max_ttl")
			}
		}
	}
	approles := map[string]bool{}
	for _, a := range k.AppRoles {
		if !validName(a.Name) || approles[a.Name] {
			v.errorf(a.DefRange, "Invalid approle", "approle %q: names are unique lowercase letters, digits and dashes.", a.Name)
		}
		approles[a.Name] = true
		for _, c := range a.CAs {
			if !cas[c] {
				v.errorf(a.CAsRange, "Unknown CA", "approle %q: ca %q is not defined in this pki block.", a.Name, c)
			}
		}
		if a.TokenTTL != "" {
			v.ttl(a.TokenTTL, a.TokenTTLRange, "token_ttl")
		}
		if a.SecretIDTTL != "" {
			// Rotated at half its life: the runs in between must come often
			// enough, and a minute-long ID is a mistake, not a policy.
			if d := v.ttl(a.SecretIDTTL, a.SecretIDTTLRange, "secret_id_ttl"); d > 0 && d < time.Hour {
				v.errorf(a.SecretIDTTLRange, "secret_id_ttl too short", "secret_id_ttl = %q: bootstrap issues a new secret ID once half of it has passed, at its next run; use at least \"1h\" (default \"720h\").", a.SecretIDTTL)
			}
		}
	}
}

var domainRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

func (v *validator) consul() {
	c := v.p.Consul
	if !domainRE.MatchString(c.Domain) {
		v.errorf(or(c.DomainRange, v.p.Provider.DefRange), "Invalid domain", "domain = %q: Consul's DNS domain is one or more lowercase DNS labels, e.g. \"consul\".", c.Domain)
	}
}

func (v *validator) nomad() {
	n := v.p.Nomad
	def := v.p.Provider.DefRange
	seen := map[string]bool{}
	for _, ns := range n.Namespaces {
		switch {
		case ns == GeneralNamespace || ns == "default":
			v.errorf(or(n.NamespacesRange, def), "Reserved namespace", "namespace %q is reserved for platform jobs; application namespaces are e.g. \"dev\" and \"prod\".", ns)
		case !validName(ns):
			v.errorf(or(n.NamespacesRange, def), "Invalid namespace", "namespace %q: use lowercase letters, digits and dashes.", ns)
		case seen[ns]:
			v.errorf(or(n.NamespacesRange, def), "Duplicate namespace", "namespace %q is listed twice.", ns)
		}
		seen[ns] = true
	}
	// A namespace's services are named "<namespace>-…" (Consul enforces
	// it), so "dev" could register "dev-x-web" if "dev-x" existed too.
	for _, a := range n.Namespaces {
		for _, b := range n.Namespaces {
			if a != b && strings.HasPrefix(b, a+"-") {
				v.errorf(or(n.NamespacesRange, def), "Overlapping namespaces", "namespace %q starts with %q: each namespace's services are named \"<namespace>-…\", so %q could take %q's service names; rename one.", b, a+"-", a, b)
			}
		}
	}
	for _, ns := range n.DeployNamespaces {
		if !seen[ns] {
			v.errorf(or(n.DeployNamespacesRange, def), "Unknown deploy namespace", "deploy namespace %q is not in namespaces %q; the CI token may only deploy to application namespaces.", ns, n.Namespaces)
		}
	}
	if d := v.ttl(n.DrainDeadline, or(n.DrainDeadlineRange, def), "drain_deadline"); d > 24*time.Hour {
		v.errorf(or(n.DrainDeadlineRange, def), "Drain deadline too long", "drain_deadline = %q: a removed client would keep `up` waiting that long; use at most \"24h\" (\"5m\" is the default).", n.DrainDeadline)
	}
}

func (v *validator) jobs() {
	j := v.p.Jobs
	drivers := []string{"auto", "docker", "raw_exec", "exec"}
	if !slices.Contains(drivers, j.Driver) {
		v.errorf(or(j.DriverRange, v.p.Provider.DefRange), "Invalid driver", "driver = %q: use one of %s.", j.Driver, strings.Join(drivers, ", "))
	}
	def := v.p.Provider.DefRange
	docker := v.p.JobsDriver() == "docker"
	// In order, so that several mistakes are reported the same way each run.
	for _, nj := range []struct {
		name   string
		job    Job
		system bool // one instance per client: no count
	}{
		{"fabio", j.Fabio, true}, {"prometheus", j.Prometheus, false}, {"alertmanager", j.Alertmanager, false},
		{"grafana", j.Grafana, false}, {"node_exporter", j.NodeExporter, true},
	} {
		name, job := nj.name, nj.job
		if !job.Enabled {
			continue
		}
		switch {
		case nj.system && job.CountRange.Filename != "":
			v.errorf(job.CountRange, "count does not apply", "%s count = %d: %s is a system job and runs one instance on every client; remove count.", name, job.Count, name)
		case name == "alertmanager" && job.Count != 1:
			// Several Alertmanagers would not form a cluster (the job
			// disables its gossip), and each would send every notification.
			v.errorf(or(job.CountRange, def), "count does not apply", "alertmanager count = %d: Alertmanager runs one instance (several would each send every notification); remove count.", job.Count)
		case !nj.system && (job.Count < 1 || job.Count > 9):
			v.errorf(or(job.CountRange, def), "Invalid count", "%s count = %d: use 1 to 9, or enabled = false to leave the job out.", name, job.Count)
		}
		if job.CPU < 1 {
			v.errorf(or(job.CPURange, def), "Invalid cpu", "%s cpu = %d: give the job's CPU in MHz, at least 1.", name, job.CPU)
		}
		if job.Memory < 1 {
			v.errorf(or(job.MemoryRange, def), "Invalid memory", "%s memory = %d: give the job's memory in MB, at least 1.", name, job.Memory)
		}
		if job.ImageRange.Filename != "" && !docker {
			v.warnf(job.ImageRange, "image has no effect", "%s image = %q: images are only used with driver = \"docker\"; the jobs run local binaries here (driver %q%s).", name, job.Image, j.Driver, map[bool]string{true: " on the local provider", false: ""}[j.Driver == "auto"])
		}
	}
	// Alertmanager runs in the prometheus job.
	if a := j.Alertmanager; !j.Prometheus.Enabled && a.Enabled && a.EnabledRange.Filename != "" {
		v.errorf(a.EnabledRange, "Alertmanager needs Prometheus", "alertmanager enabled = true, but prometheus is disabled: Alertmanager runs in the prometheus job and receives only its alerts; enable prometheus or set alertmanager enabled = false.")
	}
}

func (v *validator) monitoring() {
	m := v.p.Monitoring
	def := v.p.Provider.DefRange
	if _, err := ParseDuration(m.Retention); err != nil {
		v.errorf(or(m.RetentionRange, def), "Invalid retention", "retention = %q: %s. Write e.g. \"15d\".", m.Retention, err)
	}
	if d, err := ParseDuration(m.ScrapeInterval); err != nil || d < time.Second {
		v.errorf(or(m.ScrapeIntervalRange, def), "Invalid scrape_interval", "scrape_interval = %q: write a duration of at least 1s, e.g. \"15s\".", m.ScrapeInterval)
	}
	if d := m.DashboardsDir; d != "" {
		if fi, err := os.Stat(v.p.Path(d)); err != nil || !fi.IsDir() {
			v.errorf(m.DashboardsDirRange, "Invalid dashboards_dir", "dashboards_dir = %q is not a directory; give a directory of Grafana dashboard JSON files, relative to the configuration file.", m.DashboardsDir)
		}
	}
	if m.AlertWebhookURL != "" && (!v.p.Jobs.Alertmanager.Enabled || !v.p.Jobs.Prometheus.Enabled) {
		v.warnf(m.AlertWebhookURLRange, "alert_webhook_url has no effect", "alert_webhook_url is set, but Alertmanager is disabled (jobs { alertmanager { enabled = false } } or prometheus disabled): no notification is sent.")
	}
	if m.AlertWebhookURL != "" {
		if u, err := url.Parse(m.AlertWebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			v.errorf(m.AlertWebhookURLRange, "Invalid alert_webhook_url", "alert_webhook_url = %q: write an http:// or https:// URL.", m.AlertWebhookURL)
		}
	}
}

func (v *validator) gitlab() {
	g := v.p.GitLabRunner
	if g == nil {
		return
	}
	if u, err := url.Parse(g.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.errorf(or(g.URLRange, g.DefRange), "Invalid url", "url = %q: write the GitLab instance URL, e.g. \"https://gitlab.com\".", g.URL)
	}
	if strings.TrimSpace(g.Token) == "" {
		v.errorf(or(g.TokenRange, g.DefRange), "Empty token", "The runner token is empty; set token = env(\"GITLAB_RUNNER_TOKEN\") and export it.")
	}
	executors := []string{"docker", "shell"}
	if !slices.Contains(executors, g.Executor) {
		v.errorf(or(g.ExecutorRange, g.DefRange), "Invalid executor", "executor = %q: use one of %s.", g.Executor, strings.Join(executors, ", "))
	}
	if a := g.RemovedTags; a != nil {
		v.errorf(a.Range, "tags was removed", "gitlab_runner tags was removed: it never reached the runner. A runner authentication token (glrt-…) carries the runner's tags, which are set in GitLab where the runner is created (CI/CD > Runners); remove the line.")
	}
	if g.Concurrent < 1 {
		v.errorf(or(g.ConcurrentRange, g.DefRange), "Invalid concurrent", "concurrent = %d: a runner runs at least one job at a time.", g.Concurrent)
	}
}

// agentPorts are the ports the agents may hold on a client's public
// address (Nomad binds every address on machines).
var agentPorts = []int{4646, 4647, 4648, 8200, 8201, 8300, 8301, 8302, 8500, 8501, 8502, 8503, 8600, 9100}

func (v *validator) ingress() {
	in := v.p.Ingress
	if in == nil {
		return
	}
	if !v.p.Jobs.Fabio.Enabled {
		v.errorf(in.DefRange, "Ingress needs Fabio", "the ingress block serves applications through Fabio, but jobs { fabio { enabled = false } }; enable fabio or remove the ingress block.")
		return
	}
	if in.Namespace == "" && !in.Platform {
		v.errorf(in.DefRange, "Empty ingress", "the ingress block serves nothing: set namespace = \"prod\" (the application namespace served on the clients' public addresses), or remove the block.")
	}
	if in.Namespace != "" {
		if !slices.Contains(v.p.Nomad.Namespaces, in.Namespace) {
			v.errorf(or(in.NamespaceRange, in.DefRange), "Unknown ingress namespace", "namespace = %q is not one of the application namespaces %q (nomad { namespaces }); the platform's own Fabio is exposed with platform = true instead.", in.Namespace, v.p.Nomad.Namespaces)
		}
		v.publicPort(in.Port, 80, or(in.PortRange, in.DefRange))
	}
	if t := in.TLS; t != nil {
		v.ingressTLS(in, t)
	}
	if v.p.Provider.Local != nil {
		v.warnf(in.DefRange, "ingress has no effect", "the local provider's nodes have no public address: nothing is served publicly. The ingress block applies to machines whose inventory gives a public_ip.")
	}
}

// publicPort checks a port the ingress binds on the clients' public
// addresses: a TCP port that none of the platform's own ports, nor the
// ports in also, take. def is the setting's default.
func (v *validator) publicPort(port, def int, rng hcl.Range, also ...int) {
	taken := append(slices.Clone(agentPorts), 9998, 9999)
	for i := range v.p.Nomad.Namespaces {
		taken = append(taken, 10001+i)
	}
	taken = append(taken, also...)
	switch {
	case port < 1 || port > 65535:
		v.errorf(rng, "Invalid port", "port = %d: give a TCP port, 1 to 65535 (default %d).", port, def)
	case slices.Contains(taken, port):
		v.errorf(rng, "Port in use", "port = %d is taken: the platform and the ingress use %v; pick another, e.g. %d.", port, taken, def)
	}
}

func (v *validator) ingressTLS(in *Ingress, t *IngressTLS) {
	if in.Namespace == "" {
		v.errorf(t.DefRange, "TLS without a namespace", "the tls block serves an application namespace over HTTPS: set namespace = \"prod\" in the ingress block, or remove the tls block.")
		return
	}
	v.publicPort(t.Port, 443, or(t.PortRange, t.DefRange), in.Port)
	// The redirect keeps the host the visitor asked for, port included: a
	// browser names a port other than 80 in it, and https://host:8080:443/
	// leads nowhere.
	if in.Port != 80 {
		v.errorf(or(in.PortRange, in.DefRange), "HTTP port with TLS", "port = %d: with a tls block the HTTP port only redirects visitors to HTTPS, and the redirect works from port 80 only; set port = 80.", in.Port)
	}
	cert, err := os.ReadFile(v.p.Path(t.CertFile))
	if err != nil {
		v.errorf(t.CertFileRange, "Unreadable certificate", "cert_file = %q: %v. Give the PEM file of the certificate and its chain (e.g. Let's Encrypt's fullchain.pem), relative to the configuration file.", t.CertFile, errors.Unwrap(err))
		return
	}
	key, err := os.ReadFile(v.p.Path(t.KeyFile))
	if err != nil {
		v.errorf(t.KeyFileRange, "Unreadable key", "key_file = %q: %v. Give the PEM file of the certificate's private key (e.g. Let's Encrypt's privkey.pem), relative to the configuration file.", t.KeyFile, errors.Unwrap(err))
		return
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		v.errorf(t.DefRange, "Invalid certificate or key", "cert_file = %q, key_file = %q: %v. Give a PEM certificate (its chain after it) and the PEM private key that matches it.", t.CertFile, t.KeyFile, err)
		return
	}
	leaf := pair.Leaf
	switch left := time.Until(leaf.NotAfter); {
	case left <= 0:
		v.errorf(t.CertFileRange, "Expired certificate", "cert_file = %q expired on %s; renew it (e.g. certbot renew) and run up again.", t.CertFile, leaf.NotAfter.UTC().Format(time.DateOnly))
	case left < 14*24*time.Hour:
		v.warnf(t.CertFileRange, "Certificate expires soon", "cert_file = %q expires on %s; renew it and run up again before then: bootstrap serves the file's certificate, it does not renew it.", t.CertFile, leaf.NotAfter.UTC().Format(time.DateOnly))
	}
}

var debName = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

func (v *validator) docker() {
	d := v.p.Docker
	if d == nil {
		return
	}
	if v.p.Provider.Local != nil {
		v.warnf(d.DefRange, "docker has no effect", "the local provider's clients use this machine's Docker engine, if any: nothing is installed. The docker block applies to machines (terraform and static providers).")
	}
	if d.Package != "" && !debName.MatchString(d.Package) {
		v.errorf(or(d.PackageRange, d.DefRange), "Invalid package", "package = %q is not a Debian package name; use \"docker.io\" (Debian's), \"docker-ce\" (Docker's repository) or \"\" when the machines come with an engine.", d.Package)
	}
	if d.Images != "" {
		dir := v.p.Path(d.Images)
		if _, err := imagearchive.Dir(dir); err != nil {
			// Named as the file names it, not from /.
			msg := strings.ReplaceAll(err.Error(), dir, d.Images)
			v.errorf(d.ImagesRange, "Invalid images", "images = %q: %s. Give a directory of image archives written by `docker save NAME:TAG > NAME.tar`, relative to the configuration file.", d.Images, msg)
		}
	}
	if !d.Daemon.IsNull() && !d.Daemon.Type().IsObjectType() && !d.Daemon.Type().IsMapType() {
		v.errorf(or(d.DaemonRange, d.DefRange), "Invalid daemon", "daemon must be an object, the settings of /etc/docker/daemon.json, e.g. daemon = { \"log-driver\" = \"journald\" }.")
	}
}

// ParseDuration accepts Go durations plus a "d" (day) unit, as Vault and
// Prometheus do.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 {
			return 0, fmt.Errorf("not a duration")
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("not a positive duration")
	}
	return d, nil
}
