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

	SecretConsulBootstrapToken = "consul/bootstrap-token"
	SecretConsulOperatorToken  = "consul/tokens/operator-read"
	SecretNomadBootstrapToken  = "nomad/bootstrap-token"
	SecretNomadCIToken         = "nomad/tokens/ci-deploy"
	SecretNomadUIToken         = "nomad/tokens/ui-read"
	SecretGrafanaAdminPassword = "grafana/admin-password"
)
