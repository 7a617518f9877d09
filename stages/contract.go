package stages

// Outputs stages record in the state for later stages, `bootstrap env` and
// the summary. Values are addresses and file paths, never secrets.
const (
	OutInventory        = "inventory_file"
	OutVaultAddr        = "vault_addr"
	OutVaultCACert      = "vault_cacert"
	OutConsulAddr       = "consul_addr"
	OutConsulCACert     = "consul_cacert"
	OutNomadAddr        = "nomad_addr"
	OutNomadCACert      = "nomad_cacert"
	OutPrometheusAddr   = "prometheus_addr"
	OutAlertmanagerAddr = "alertmanager_addr"
	OutGrafanaAddr      = "grafana_addr"
	OutFabioAddr        = "fabio_addr"
	OutFabioUIAddr      = "fabio_ui_addr"

	// OutVaultRootTokenRevoked is "true" once the pki stage revoked the root
	// token; later runs use the admin identity.
	OutVaultRootTokenRevoked = "vault_root_token_revoked"
	// OutVaultJWTNomadAccessor is the accessor of the auth/jwt-nomad mount
	// that Nomad workload identities log in with.
	OutVaultJWTNomadAccessor = "vault_jwt_nomad_accessor"
	// OutVaultAppRolePrefix + NAME + "_role_id" (and "_secret_id_accessor")
	// record an AppRole's public identifiers.
	OutVaultAppRolePrefix = "vault_approle_"
)

// Secret names in the store. Tokens also go to Vault KV under
// secret/bootstrap/<same name> once Vault is up.
const (
	SecretSSHKey          = "ssh/id_ed25519"
	SecretSSHPublicKey    = "ssh/id_ed25519.pub"
	SecretConsulGossipKey = "consul/gossip-key"
	SecretNomadGossipKey  = "nomad/gossip-key"

	SecretVaultInit          = "vault/init.json" // unseal keys and the first root token
	SecretVaultRootToken     = "vault/root-token"
	SecretVaultAdminPassword = "vault/admin-password"
	SecretVaultAdminToken    = "vault/admin-token"
	// Periodic tokens the consul-template daemons renew agent certificates with.
	SecretConsulTemplateServerToken = "vault/tokens/consul-template-server"
	SecretConsulTemplateClientToken = "vault/tokens/consul-template-client"
	// SecretVaultAppRolePrefix + NAME + "/secret-id" is an AppRole's secret ID.
	SecretVaultAppRolePrefix = "vault/approle/"

	SecretConsulBootstrapToken = "consul/bootstrap-token"
	SecretConsulOperatorToken  = "consul/tokens/operator-read"
	SecretNomadBootstrapToken  = "nomad/bootstrap-token"
	// SecretNomadDeployTokenPrefix + NAMESPACE is the CI deploy token of an
	// application namespace (see SecretNomadDeployToken).
	SecretNomadDeployTokenPrefix = "nomad/tokens/ci-"
	SecretNomadUIToken           = "nomad/tokens/ui-read"
	SecretGrafanaAdminPassword   = "grafana/admin-password"
)

// SecretNomadDeployToken is where the CI deploy token of one application
// namespace is kept: each namespace has its own, so a token that leaks from
// dev's pipelines cannot touch prod.
func SecretNomadDeployToken(namespace string) string {
	return SecretNomadDeployTokenPrefix + namespace
}

// OutFabioAppAddr is the address of the Fabio that serves application
// namespace ns.
func OutFabioAppAddr(ns string) string { return "fabio_" + ns + "_addr" }
