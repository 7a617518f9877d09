// Package config reads platform.hcl: the one file that describes a platform.
//
// Every setting has a default, so a file holding only `provider "local" {}`
// is a complete platform. Errors are HCL diagnostics that name the file, line
// and column and say how to fix the problem.
package config

import (
	"path/filepath"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
)

// Platform is a parsed and validated platform.hcl with every default applied.
type Platform struct {
	// Filename is the path the configuration was read from; Dir is its directory,
	// against which relative paths in the file are resolved.
	Filename string
	Dir      string

	Name       string
	Datacenter string
	Region     string

	Provider     Provider
	Vault        Vault
	PKI          PKI
	Consul       Consul
	Nomad        Nomad
	Jobs         Jobs
	Monitoring   Monitoring
	GitLabRunner *GitLabRunner
	// Ingress is nil unless the file has an ingress block: then nothing is
	// served on the nodes' public addresses.
	Ingress *Ingress
	// Docker is nil unless the file has a docker block; DockerEngine says
	// whether the clients get an engine.
	Docker *Docker

	// Secrets are the values env() and file() returned. Whatever the file
	// reads that way (tokens, passwords, keys) must never be printed: the
	// commands register them with the redactor.
	Secrets []string
}

// Provider says where the machines come from. Exactly one of the fields is set.
type Provider struct {
	Type      string // "local", "terraform" or "static"
	Local     *LocalProvider
	Terraform *TerraformProvider
	Static    *StaticProvider
	DefRange  hcl.Range
}

// LocalProvider runs every node as processes on this machine, each on its own
// loopback address.
type LocalProvider struct {
	Servers int `hcl:"servers,optional"`
	Clients int `hcl:"clients,optional"`
	// Subnet is the loopback network the node addresses are taken from:
	// servers first, then clients, starting at .1.
	Subnet string `hcl:"subnet,optional"`
	// BinDir holds vault, consul, nomad, ... (default: ./bin next to the
	// config file, as `make tools` leaves it).
	BinDir string `hcl:"bin_dir,optional"`

	ServersRange hcl.Range `hcl:"servers,attr_value_range"`
	ClientsRange hcl.Range `hcl:"clients,attr_value_range"`
	SubnetRange  hcl.Range `hcl:"subnet,attr_value_range"`
}

// TerraformProvider runs a Terraform module whose output bootstrap_inventory
// follows the inventory contract.
type TerraformProvider struct {
	Module string `hcl:"module"`
	// Vars are the module's input variables, each with the type it was
	// written with (a number stays a number next to a list). Decoded by
	// decodeProvider, not gohcl, which would unify them to one type.
	Vars map[string]cty.Value
	// Binary is the terraform or tofu executable (default: found on PATH).
	Binary string `hcl:"binary,optional"`
	// Backend "local" keeps the state in the state directory; any other value
	// is written as the module's backend with BackendConfig.
	Backend       string            `hcl:"backend,optional"`
	BackendConfig map[string]string `hcl:"backend_config,optional"`
	// SSHTimeout bounds the wait for every node to answer SSH.
	SSHTimeout string `hcl:"ssh_timeout,optional"`

	ModuleRange     hcl.Range `hcl:"module,attr_value_range"`
	SSHTimeoutRange hcl.Range `hcl:"ssh_timeout,attr_value_range"`

	// How services are installed and run on the machines (see Machines).
	ServiceManager string `hcl:"service_manager,optional"`
	InstallMethod  string `hcl:"install_method,optional"`
	MachineBinDir  string `hcl:"bin_dir,optional"`
	NodeRoot       string `hcl:"node_root,optional"`

	ServiceManagerRange hcl.Range `hcl:"service_manager,attr_value_range"`
	InstallMethodRange  hcl.Range `hcl:"install_method,attr_value_range"`
}

// StaticProvider describes existing machines reached over SSH.
type StaticProvider struct {
	// Inventory is a JSON file in the inventory contract format.
	Inventory string       `hcl:"inventory,optional"`
	Nodes     []StaticNode `hcl:"node,block"`

	InventoryRange hcl.Range `hcl:"inventory,attr_value_range"`

	// How services are installed and run on the machines (see Machines).
	ServiceManager string `hcl:"service_manager,optional"`
	InstallMethod  string `hcl:"install_method,optional"`
	MachineBinDir  string `hcl:"bin_dir,optional"`
	NodeRoot       string `hcl:"node_root,optional"`

	ServiceManagerRange hcl.Range `hcl:"service_manager,attr_value_range"`
	InstallMethodRange  hcl.Range `hcl:"install_method,attr_value_range"`
}

// StaticNode is one machine of a static inventory.
type StaticNode struct {
	Name      string   `hcl:"name,label"`
	Roles     []string `hcl:"roles"`
	PublicIP  string   `hcl:"public_ip,optional"`
	PrivateIP string   `hcl:"private_ip"`
	SSH       *SSH     `hcl:"ssh,block"`

	DefRange       hcl.Range `hcl:",def_range"`
	RolesRange     hcl.Range `hcl:"roles,attr_value_range"`
	PrivateIPRange hcl.Range `hcl:"private_ip,attr_value_range"`
}

// SSH says how to reach a node.
type SSH struct {
	User           string `hcl:"user,optional"`
	Port           int    `hcl:"port,optional"`
	PrivateKeyFile string `hcl:"private_key_file,optional"`

	PortRange hcl.Range `hcl:"port,attr_value_range"`
}

// Vault configures the Vault cluster that backs the PKI.
type Vault struct {
	// HA runs Vault on three servers with integrated raft storage.
	HA bool `hcl:"ha,optional"`
	// Nodes names the nodes that run Vault (default: the first server, or
	// the first three servers with ha = true).
	Nodes        []string `hcl:"nodes,optional"`
	KeyShares    int      `hcl:"key_shares,optional"`
	KeyThreshold int      `hcl:"key_threshold,optional"`
	// PGPKeys encrypts the unseal key shares at init, one public key per
	// share, as `vault operator init -pgp-keys` does. Each value is the path
	// of a key file (relative to this file) or the key itself, e.g.
	// file("alice.asc"); ASCII-armored or base64. The secret store then
	// holds only encrypted shares, and bootstrap can no longer unseal Vault
	// on its own: the key holders do, with `vault operator unseal`.
	PGPKeys []string `hcl:"pgp_keys,optional"`
	// PGPKeysB64 are PGPKeys as sys/init takes them: each binary public key
	// in base64. Validation fills it in.
	PGPKeysB64 []string

	NodesRange        hcl.Range `hcl:"nodes,attr_value_range"`
	KeySharesRange    hcl.Range `hcl:"key_shares,attr_value_range"`
	KeyThresholdRange hcl.Range `hcl:"key_threshold,attr_value_range"`
	PGPKeysRange      hcl.Range `hcl:"pgp_keys,attr_value_range"`
	DefRange          hcl.Range `hcl:",def_range"`
	// pgpKeyElems are pgp_keys' elements as written, for diagnostics about
	// one key.
	pgpKeyElems []listElement
}

// PKI configures the certificate authorities in Vault.
type PKI struct {
	RootTTL         string `hcl:"root_ttl,optional"`
	IntermediateTTL string `hcl:"intermediate_ttl,optional"`
	// LeafTTL is the lifetime of agent certificates; consul-template renews
	// them before they expire.
	LeafTTL string `hcl:"leaf_ttl,optional"`
	// RevokeRootToken revokes Vault's root token once the admin identity
	// exists. It can be regenerated from the unseal keys.
	RevokeRootToken bool `hcl:"revoke_root_token,optional"`

	CAs      []CA      `hcl:"ca,block"`
	AppRoles []AppRole `hcl:"approle,block"`

	RootTTLRange         hcl.Range `hcl:"root_ttl,attr_value_range"`
	IntermediateTTLRange hcl.Range `hcl:"intermediate_ttl,attr_value_range"`
	LeafTTLRange         hcl.Range `hcl:"leaf_ttl,attr_value_range"`
}

// CA is an application certificate authority: a root, optional
// intermediates signed by it, and issuing roles.
type CA struct {
	Name          string         `hcl:"name,label"`
	CommonName    string         `hcl:"common_name"`
	TTL           string         `hcl:"ttl,optional"`
	KeyType       string         `hcl:"key_type,optional"`
	KeyBits       int            `hcl:"key_bits,optional"`
	Intermediates []Intermediate `hcl:"intermediate,block"`
	Roles         []Role         `hcl:"role,block"`

	DefRange     hcl.Range `hcl:",def_range"`
	TTLRange     hcl.Range `hcl:"ttl,attr_value_range"`
	KeyTypeRange hcl.Range `hcl:"key_type,attr_value_range"`
}

// Intermediate is an intermediate CA signed by its CA's root.
type Intermediate struct {
	Name       string `hcl:"name,label"`
	CommonName string `hcl:"common_name"`
	TTL        string `hcl:"ttl,optional"`

	DefRange hcl.Range `hcl:",def_range"`
	TTLRange hcl.Range `hcl:"ttl,attr_value_range"`
}

// Role is a Vault PKI role: what leaf certificates may be issued.
type Role struct {
	Name string `hcl:"name,label"`
	// Issuer is the intermediate that signs the leaves (default: the root).
	Issuer          string   `hcl:"issuer,optional"`
	AllowedDomains  []string `hcl:"allowed_domains,optional"`
	AllowSubdomains bool     `hcl:"allow_subdomains,optional"`
	AllowBareDomain bool     `hcl:"allow_bare_domains,optional"`
	AllowAnyName    bool     `hcl:"allow_any_name,optional"`
	AllowIPSANs     bool     `hcl:"allow_ip_sans,optional"`
	ServerFlag      bool     `hcl:"server_flag,optional"`
	ClientFlag      bool     `hcl:"client_flag,optional"`
	KeyUsage        []string `hcl:"key_usage,optional"`
	ExtKeyUsage     []string `hcl:"ext_key_usage,optional"`
	KeyType         string   `hcl:"key_type,optional"`
	KeyBits         int      `hcl:"key_bits,optional"`
	TTL             string   `hcl:"ttl,optional"`
	MaxTTL          string   `hcl:"max_ttl,optional"`

	DefRange    hcl.Range `hcl:",def_range"`
	IssuerRange hcl.Range `hcl:"issuer,attr_value_range"`
	TTLRange    hcl.Range `hcl:"ttl,attr_value_range"`
	MaxTTLRange hcl.Range `hcl:"max_ttl,attr_value_range"`
}

// AppRole is a Vault AppRole for an application, allowed to issue from the
// roles of the listed CAs only.
type AppRole struct {
	Name     string   `hcl:"name,label"`
	CAs      []string `hcl:"cas"`
	TokenTTL string   `hcl:"token_ttl,optional"`
	// SecretIDTTL is how long the secret ID bootstrap issues is valid
	// (default 720h). A run issues a new one once half of it has passed;
	// the old one keeps working until it expires, so its users have the
	// other half to pick up the new one.
	SecretIDTTL string `hcl:"secret_id_ttl,optional"`

	DefRange         hcl.Range `hcl:",def_range"`
	CAsRange         hcl.Range `hcl:"cas,attr_value_range"`
	TokenTTLRange    hcl.Range `hcl:"token_ttl,attr_value_range"`
	SecretIDTTLRange hcl.Range `hcl:"secret_id_ttl,attr_value_range"`
}

// Consul configures the Consul cluster.
type Consul struct {
	Domain string `hcl:"domain,optional"`
	// UI serves Consul's web UI on the servers (the consul role's
	// ui_config); clients never serve it.
	UI bool `hcl:"ui,optional"`
	// DNS points the nodes' resolver at Consul for .consul names (real
	// machines only: the local provider cannot change this machine's resolver).
	DNS bool `hcl:"dns,optional"`

	DomainRange hcl.Range `hcl:"domain,attr_value_range"`
}

// Nomad configures the Nomad cluster.
type Nomad struct {
	// Namespaces for applications; "general" (platform jobs) always exists.
	Namespaces []string `hcl:"namespaces,optional"`
	// DeployNamespaces are the namespaces the CI deploy token may write to
	// (default: every application namespace).
	DeployNamespaces []string `hcl:"deploy_namespaces,optional"`
	// DrainDeadline bounds how long a client that leaves the platform
	// (scale in) is drained: allocations still on it then are stopped.
	DrainDeadline string `hcl:"drain_deadline,optional"`

	NamespacesRange       hcl.Range `hcl:"namespaces,attr_value_range"`
	DeployNamespacesRange hcl.Range `hcl:"deploy_namespaces,attr_value_range"`
	DrainDeadlineRange    hcl.Range `hcl:"drain_deadline,attr_value_range"`
}

// Jobs configures the platform jobs.
type Jobs struct {
	// Driver is "docker" (images), "raw_exec" or "exec" (local binaries), or
	// "auto": docker on provisioned machines, raw_exec on the local provider.
	Driver string `hcl:"driver,optional"`

	Fabio        Job `hcl:"fabio,block"`
	Prometheus   Job `hcl:"prometheus,block"`
	Alertmanager Job `hcl:"alertmanager,block"`
	Grafana      Job `hcl:"grafana,block"`
	NodeExporter Job `hcl:"node_exporter,block"`

	DriverRange hcl.Range `hcl:"driver,attr_value_range"`
}

// Job holds the settings every platform job shares.
type Job struct {
	Enabled bool `hcl:"enabled,optional"`
	// Image is the container image, used with the docker driver only.
	Image string `hcl:"image,optional"`
	// Count is the number of instances of a service job (prometheus,
	// grafana); system jobs (fabio, node_exporter) run one per client and
	// refuse it, and Alertmanager runs one instance.
	Count  int `hcl:"count,optional"`
	CPU    int `hcl:"cpu,optional"`
	Memory int `hcl:"memory,optional"`

	EnabledRange hcl.Range `hcl:"enabled,attr_value_range"`
	ImageRange   hcl.Range `hcl:"image,attr_value_range"`
	CountRange   hcl.Range `hcl:"count,attr_value_range"`
	CPURange     hcl.Range `hcl:"cpu,attr_value_range"`
	MemoryRange  hcl.Range `hcl:"memory,attr_value_range"`
}

// Monitoring configures Prometheus, Alertmanager and Grafana.
type Monitoring struct {
	Retention      string `hcl:"retention,optional"`
	ScrapeInterval string `hcl:"scrape_interval,optional"`
	// AlertWebhookURL receives Alertmanager notifications.
	AlertWebhookURL string `hcl:"alert_webhook_url,optional"`
	// DashboardsDir adds the user's own Grafana dashboards (JSON files).
	DashboardsDir string `hcl:"dashboards_dir,optional"`

	RetentionRange       hcl.Range `hcl:"retention,attr_value_range"`
	ScrapeIntervalRange  hcl.Range `hcl:"scrape_interval,attr_value_range"`
	AlertWebhookURLRange hcl.Range `hcl:"alert_webhook_url,attr_value_range"`
	DashboardsDirRange   hcl.Range `hcl:"dashboards_dir,attr_value_range"`
}

// Ingress serves applications on the clients' public addresses (the
// inventory's public_ip): the way in from the Internet. Fabio serves plain
// HTTP there, or with a tls block HTTPS with the user's certificate and a
// redirect from HTTP. The platform's own PKI does not issue it: no
// visitor's browser would trust it.
type Ingress struct {
	// Namespace is the application namespace whose Fabio listens on each
	// client's public address, on Port.
	Namespace string `hcl:"namespace,optional"`
	Port      int    `hcl:"port,optional"`
	// Platform has the platform's Fabio (Prometheus, Alertmanager, Grafana)
	// listen on the public addresses too, on its own port 9999: only for
	// clients whose firewall admits the administrators alone.
	Platform bool `hcl:"platform,optional"`
	// TLS serves Namespace over HTTPS; Port then only redirects to it.
	TLS *IngressTLS `hcl:"tls,block"`

	DefRange       hcl.Range `hcl:",def_range"`
	NamespaceRange hcl.Range `hcl:"namespace,attr_value_range"`
	PortRange      hcl.Range `hcl:"port,attr_value_range"`
}

// IngressTLS is the certificate the ingress serves, e.g. a Let's Encrypt
// fullchain.pem and privkey.pem: the files are read at each run and kept
// in Vault, where only the Fabio job reads them.
type IngressTLS struct {
	Port     int    `hcl:"port,optional"`
	CertFile string `hcl:"cert_file"`
	KeyFile  string `hcl:"key_file"`

	DefRange      hcl.Range `hcl:",def_range"`
	PortRange     hcl.Range `hcl:"port,attr_value_range"`
	CertFileRange hcl.Range `hcl:"cert_file,attr_value_range"`
	KeyFileRange  hcl.Range `hcl:"key_file,attr_value_range"`
}

// Docker is the engine the roles install on the clients of machines (not on
// the local provider, whose clients share this machine's).
type Docker struct {
	// Package is the Debian package of the engine: docker.io (the default,
	// from Debian) or docker-ce (from Docker's repository, which the
	// machine's apt must know). "" installs nothing: the machines' image
	// comes with an engine.
	Package string `hcl:"package,optional"`
	// Images is a directory of image archives (`docker save` format,
	// *.tar) loaded into every client's engine, for machines that cannot
	// pull: the docker profile's images, or the applications'.
	Images string `hcl:"images,optional"`
	// Daemon, an object, becomes the engine's /etc/docker/daemon.json
	// (e.g. { "storage-driver" = "vfs" }); null leaves that file alone.
	Daemon cty.Value `hcl:"daemon,optional"`

	DefRange     hcl.Range `hcl:",def_range"`
	PackageRange hcl.Range `hcl:"package,attr_value_range"`
	ImagesRange  hcl.Range `hcl:"images,attr_value_range"`
	DaemonRange  hcl.Range `hcl:"daemon,attr_value_range"`
}

// defaultDocker is the engine of a docker block that sets nothing.
func defaultDocker() Docker {
	return Docker{Package: "docker.io", Daemon: cty.NullVal(cty.DynamicPseudoType)}
}

// DaemonJSON is Daemon as daemon.json, "" for none.
func (d *Docker) DaemonJSON() (string, error) {
	if d.Daemon.IsNull() {
		return "", nil
	}
	b, err := ctyjson.Marshal(d.Daemon, d.Daemon.Type())
	return string(b), err
}

// Path resolves a path the file gives against the file's directory.
func (p *Platform) Path(s string) string {
	if filepath.IsAbs(s) {
		return s
	}
	return filepath.Join(p.Dir, s)
}

// JobsDriver resolves jobs.driver: "auto" runs local binaries with
// raw_exec on the local provider and images with docker on machines.
func (p *Platform) JobsDriver() string {
	switch {
	case p.Jobs.Driver != "auto":
		return p.Jobs.Driver
	case p.Provider.Local != nil:
		return "raw_exec"
	}
	return "docker"
}

// DockerEngine returns what the roles install on the clients of machines:
// the docker block, or its defaults when the platform jobs run on docker
// without one; nil for no engine (and on the local provider).
func (p *Platform) DockerEngine() *Docker {
	switch {
	case p.Provider.Local != nil:
		return nil
	case p.Docker != nil:
		return p.Docker
	case p.JobsDriver() == "docker":
		d := defaultDocker()
		return &d
	}
	return nil
}

// GitLabRunner registers a GitLab Runner job when present.
type GitLabRunner struct {
	URL string `hcl:"url"`
	// Token is the runner authentication token; write env("NAME") so it never
	// sits in the file.
	Token    string `hcl:"token"`
	Executor string `hcl:"executor,optional"`
	// Concurrent is how many CI jobs one runner runs at once.
	Concurrent int    `hcl:"concurrent,optional"`
	Image      string `hcl:"image,optional"`
	// RemovedTags is the removed setting tags, decoded only so that a file
	// still setting it is told why it went: a runner authentication token
	// (glrt-…) carries the runner's tags, set in GitLab, and GitLab Runner
	// has no tags setting in config.toml nor accepts --tag-list with such
	// a token.
	RemovedTags *hcl.Attribute `hcl:"tags,optional"`

	DefRange        hcl.Range `hcl:",def_range"`
	URLRange        hcl.Range `hcl:"url,attr_value_range"`
	ExecutorRange   hcl.Range `hcl:"executor,attr_value_range"`
	TokenRange      hcl.Range `hcl:"token,attr_value_range"`
	ConcurrentRange hcl.Range `hcl:"concurrent,attr_value_range"`
}

// Machines says how bootstrap installs and runs services on machines it
// reaches over SSH.
type Machines struct {
	// ServiceManager is "systemd" (units) or "process" (start-stop-daemon
	// with pid files under NodeRoot/<node>, for machines without systemd).
	ServiceManager string
	// InstallMethod is "apt" (HashiCorp's repository, pinned versions) or
	// "binary" (copied from BinDir on the machine running bootstrap:
	// air-gapped installs).
	InstallMethod string
	BinDir        string
	// NodeRoot holds the nodes' directory trees in process mode.
	NodeRoot string
}

// Machines returns the machine settings of a static or terraform provider,
// with defaults; nil for the local provider.
func (p Provider) Machines() *Machines {
	var m Machines
	switch {
	case p.Static != nil:
		m = Machines{p.Static.ServiceManager, p.Static.InstallMethod, p.Static.MachineBinDir, p.Static.NodeRoot}
	case p.Terraform != nil:
		m = Machines{p.Terraform.ServiceManager, p.Terraform.InstallMethod, p.Terraform.MachineBinDir, p.Terraform.NodeRoot}
	default:
		return nil
	}
	if m.ServiceManager == "" {
		m.ServiceManager = "systemd"
	}
	if m.InstallMethod == "" {
		m.InstallMethod = "apt"
	}
	if m.NodeRoot == "" {
		m.NodeRoot = "/var/lib/bootstrap"
	}
	return &m
}

// The platform namespace every platform job runs in.
const GeneralNamespace = "general"

// VaultNodes returns the names of the nodes that run Vault, given the
// inventory's servers in order.
func (v Vault) VaultNodes(servers []string) []string {
	if len(v.Nodes) > 0 {
		return v.Nodes
	}
	n := 1
	if v.HA {
		n = 3
	}
	if n > len(servers) {
		n = len(servers)
	}
	return servers[:n]
}
