// The contract between stages: the outputs, secrets, ports, files and
// names that one stage makes and other stages, `bootstrap env` or the
// summary use, each with the stage that writes it. A stage package learns
// what another made from here, never by importing it. What a stage keeps
// only for itself is a note (Env.Note), not an output.
package stages

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
)

// ReasonNewBinaries starts the reason a stage's plan gives for a node
// whose binaries changed (an upgrade; ansible.Pending), followed by their
// names.
const ReasonNewBinaries = "new binaries: "

// Outputs stages record in the state for later stages, `bootstrap env` and
// the summary. Values are addresses, file paths and public identifiers,
// never secrets.
const (
	OutInventory = "inventory_file" // provision: the stage's copy of the inventory (see Env.Inventory)

	OutVaultAddr   = "vault_addr"   // vault
	OutVaultCACert = "vault_cacert" // vault

	// OutVaultJWTNomadAccessor (pki) is the accessor of the auth/jwt-nomad
	// mount that Nomad workload identities log in with.
	OutVaultJWTNomadAccessor = "vault_jwt_nomad_accessor"
	// OutVaultAppRolePrefix + NAME + "_role_id" (pki) is an AppRole's role
	// ID, which an application logs in with together with its secret ID.
	OutVaultAppRolePrefix = "vault_approle_"

	OutConsulAddr   = "consul_addr"   // consul
	OutConsulCACert = "consul_cacert" // consul
	// OutConsulTLSServerName (consul) is the name the servers' certificates
	// carry (server.<datacenter>.<domain>), for CONSUL_TLS_SERVER_NAME.
	OutConsulTLSServerName = "consul_tls_server_name"

	OutNomadAddr   = "nomad_addr"   // nomad
	OutNomadCACert = "nomad_cacert" // nomad
	// OutNomadTLSServerName (nomad) is the name the servers' certificates
	// carry (server.<region>.nomad), for NOMAD_TLS_SERVER_NAME.
	OutNomadTLSServerName = "nomad_tls_server_name"

	// jobs: where the platform's services answer.
	OutPrometheusAddr   = "prometheus_addr"
	OutAlertmanagerAddr = "alertmanager_addr"
	OutGrafanaAddr      = "grafana_addr"
	OutFabioAddr        = "fabio_addr"
	OutFabioUIAddr      = "fabio_ui_addr"
)

// OutFabioAppAddr (jobs) is the address of the Fabio that serves
// application namespace ns.
func OutFabioAppAddr(ns string) string { return "fabio_" + ns + "_addr" }

// Secret names in the store. Tokens also go to Vault KV under
// secret/bootstrap/<same name> once Vault is up.
const (
	// keys
	SecretSSHKey          = "ssh/id_ed25519"
	SecretSSHPublicKey    = "ssh/id_ed25519.pub"
	SecretConsulGossipKey = "consul/gossip-key"
	SecretNomadGossipKey  = "nomad/gossip-key"

	// vault
	SecretVaultInit      = "vault/init.json" // unseal keys and the first root token
	SecretVaultRootToken = "vault/root-token"

	// pki
	SecretVaultAdminPassword = "vault/admin-password"
	SecretVaultAdminToken    = "vault/admin-token"
	// Periodic tokens the consul-template daemons renew agent certificates with.
	SecretConsulTemplateServerToken = "vault/tokens/consul-template-server"
	SecretConsulTemplateClientToken = "vault/tokens/consul-template-client"
	// SecretVaultAppRolePrefix + NAME + "/secret-id" is an AppRole's secret ID.
	SecretVaultAppRolePrefix = "vault/approle/"

	// consul: its ACL tokens are consul/tokens/<name>.
	SecretConsulBootstrapToken  = "consul/bootstrap-token"
	SecretConsulOperatorToken   = "consul/tokens/operator-read"
	SecretConsulNomadAgentToken = "consul/tokens/nomad-agent" // the Nomad agents'
	SecretConsulPrometheusToken = "consul/tokens/prometheus"  // Prometheus's Consul service discovery
	SecretConsulFabioToken      = "consul/tokens/fabio"       // the general namespace's Fabio

	// nomad
	SecretNomadBootstrapToken = "nomad/bootstrap-token"
	// SecretNomadDeployTokenPrefix + NAMESPACE is the CI deploy token of an
	// application namespace (see SecretNomadDeployToken).
	SecretNomadDeployTokenPrefix = "nomad/tokens/ci-"
	SecretNomadUIToken           = "nomad/tokens/ui-read"
	SecretNomadPrometheusToken   = "nomad/tokens/prometheus" // Prometheus scrapes Nomad's metrics with it

	// jobs
	SecretGrafanaAdminPassword = "grafana/admin-password"
)

// ConsulFabioPolicy (consul) is the Consul policy of application namespace
// ns's Fabio, which sees only that namespace's services.
func ConsulFabioPolicy(ns string) string { return "fabio-" + ns }

// SecretConsulFabioNamespaceToken (consul) is where the Consul token of
// namespace ns's Fabio is kept.
func SecretConsulFabioNamespaceToken(ns string) string {
	return "consul/tokens/" + ConsulFabioPolicy(ns)
}

// SecretNomadDeployToken (nomad) is where the CI deploy token of one
// application namespace is kept: each namespace has its own, so a token
// that leaks from dev's pipelines cannot touch prod.
func SecretNomadDeployToken(namespace string) string {
	return SecretNomadDeployTokenPrefix + namespace
}

// DeployNamespaces are the application namespaces the nomad stage makes a
// CI deploy token for.
func DeployNamespaces(cfg *config.Platform) []string {
	if len(cfg.Nomad.DeployNamespaces) > 0 {
		return cfg.Nomad.DeployNamespaces
	}
	return cfg.Nomad.Namespaces
}

// Inventory returns the inventory the provision stage recorded, or an error
// that tells the user to run it.
func (e *Env) Inventory() (*inventory.Inventory, error) {
	path := e.State.Output(OutInventory)
	if path == "" {
		return nil, NotReadyf("no inventory yet: the provision stage has not run")
	}
	// The recorded copy is the stage's own, in the state directory, so the
	// local provider's "local" fields are kept.
	inv, err := inventory.LoadSaved(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, NotReadyf("inventory %s is missing: run `bootstrap up --only provision`", path)
	}
	return inv, err
}

// CAFile is where the pki stage writes the certificate chain of CA name
// ("consul", "nomad", or an application CA's): its root followed by its
// intermediates, what a client needs to verify certificates issued by any
// of them.
func (e *Env) CAFile(name string) string {
	return filepath.Join(e.StateDir, "tls", name+"-ca.pem")
}

// API ports on every node; plain HTTP is off.
const (
	ConsulHTTPSPort = 8501
	NomadHTTPPort   = 4646
	// NodeExporterPort is node-exporter's on every node: the clients' job
	// and the servers' service (plain HTTP, on the private address).
	NodeExporterPort = 9100
)

// ConsulAddr is the HTTPS address (host:port) of a node's Consul agent.
func ConsulAddr(n inventory.Node) string {
	return net.JoinHostPort(n.APIAddress(), fmt.Sprint(ConsulHTTPSPort))
}

// NomadAddr is the HTTPS URL of a node's Nomad agent.
func NomadAddr(n inventory.Node) string {
	return "https://" + net.JoinHostPort(n.APIAddress(), fmt.Sprint(NomadHTTPPort))
}

// ConsulServerName is the name in the certificates pki issues to the Consul
// servers of e's datacenter. Clients verify it rather than the address they
// dial: the PKI issues any IP address to client nodes too, never this name.
func (e *Env) ConsulServerName() string {
	return apitls.ConsulServerName(e.Config.Datacenter, e.Config.Consul.Domain)
}

// ConsulTLSName is the name n's Consul agent presents: a server's name for
// server nodes, the client agents' (client.<datacenter>.<domain>) otherwise.
func (e *Env) ConsulTLSName(n inventory.Node) string {
	if n.Has(inventory.RoleServer) {
		return e.ConsulServerName()
	}
	return apitls.ConsulClientName(e.Config.Datacenter, e.Config.Consul.Domain)
}

// NomadServerName is the name in the certificates of the Nomad servers of
// e's region (see ConsulServerName).
func (e *Env) NomadServerName() string { return apitls.NomadServerName(e.Config.Region) }

// NomadTLSName is the name n's Nomad agent presents: a server's name for
// server nodes, the client agents' (client.<region>.nomad) otherwise.
func (e *Env) NomadTLSName(n inventory.Node) string {
	if n.Has(inventory.RoleServer) {
		return e.NomadServerName()
	}
	return apitls.NomadClientName(e.Config.Region)
}
