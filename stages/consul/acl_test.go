package consul

import (
	"slices"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// The tokens other stages read from the contract are the ones the stage
// makes.
func TestContractTokens(t *testing.T) {
	e := testEnv(t, "provider \"local\" {}\nnomad {\n  namespaces = [\"dev\"]\n}\n")
	var names []string
	for _, tk := range wantTokens(e.Config, &inventory.Inventory{}) {
		names = append(names, tk.secretName())
	}
	for _, s := range []string{stages.SecretConsulNomadAgentToken, stages.SecretConsulPrometheusToken, stages.SecretConsulFabioToken, stages.SecretConsulFabioNamespaceToken("dev"), stages.SecretConsulOperatorToken} {
		if !slices.Contains(names, s) {
			t.Errorf("the stage makes no token %s; it makes %v", s, names)
		}
	}
}
