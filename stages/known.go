package stages

import (
	"errors"
	"fmt"
	"strings"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
)

// KnownDetail marks a change a waiting stage predicts from the configuration
// alone, the way Terraform shows "(known after apply)": the stage cannot ask
// the live system until earlier stages are applied, so the change is what
// it expects to make, not what it found.
const KnownDetail = "known after earlier stages"

// WithKnown is how a stage's Plan reports what it can already tell while it
// waits: when err says the stage is not ready (ErrNotReady) and nothing was
// found, it returns known's changes, each marked with KnownDetail, with err.
// The runner shows them for the waiting stage; `up` still fails on err.
func WithKnown(changes []Change, err error, known func() []Change) ([]Change, error) {
	if !errors.Is(err, ErrNotReady) || len(changes) > 0 {
		return changes, err
	}
	out := known()
	for i := range out {
		if out[i].Detail == "" {
			out[i].Detail = KnownDetail
		} else {
			out[i].Detail += "; " + KnownDetail
		}
	}
	return out, err
}

// PlannedNodes names, for a prediction, the nodes with role ("server",
// "client" or "vault") that the provision stage will make. Only the local
// provider's names follow from the configuration (server-1..N,
// client-1..M, as the provision stage names them); for the others it
// describes them ("every server").
func PlannedNodes(cfg *config.Platform, role string) string {
	if l := cfg.Provider.Local; l != nil {
		var servers, clients []string
		for i := 1; i <= l.Servers; i++ {
			servers = append(servers, fmt.Sprintf("server-%d", i))
		}
		for i := 1; i <= l.Clients; i++ {
			clients = append(clients, fmt.Sprintf("client-%d", i))
		}
		switch role {
		case inventory.RoleServer:
			return strings.Join(servers, ", ")
		case inventory.RoleClient:
			return strings.Join(clients, ", ")
		case inventory.RoleVault:
			return strings.Join(cfg.Vault.VaultNodes(servers), ", ")
		}
		return strings.Join(append(servers, clients...), ", ")
	}
	switch role {
	case inventory.RoleServer, inventory.RoleClient:
		return "every " + role
	case inventory.RoleVault:
		return "every vault node"
	}
	return "every node"
}
