package vault

import (
	"errors"
	"slices"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
)

func TestRollOrder(t *testing.T) {
	node := func(name string, standby bool) nodeHealth {
		return nodeHealth{node: inventory.Node{Name: name}, health: &vaultapi.HealthResponse{Initialized: true, Standby: standby}}
	}
	hs := []nodeHealth{node("server-1", false), node("server-2", true), node("server-3", true)}
	names := func(hs []nodeHealth) []string {
		var out []string
		for _, h := range hs {
			out = append(out, h.node.Name)
		}
		return out
	}
	all := map[string]string{"server-1": "x", "server-2": "x", "server-3": "x"}
	if got := names(rollOrder(hs, all, false)); !slices.Equal(got, []string{"server-2", "server-3", "server-1"}) {
		t.Errorf("every node pending: %v, want the standbys, then the active server-1", got)
	}
	if got := names(rollOrder(hs, map[string]string{"server-1": "x", "server-3": "x"}, false)); !slices.Equal(got, []string{"server-3", "server-1"}) {
		t.Errorf("server-1 and server-3 pending: %v", got)
	}
	if got := names(rollOrder(hs, nil, true)); !slices.Equal(got, []string{"server-2", "server-3", "server-1"}) {
		t.Errorf("new TLS files everywhere: %v", got)
	}

	init := &InitData{KeysB64: []string{"k"}, Threshold: 1}
	if !rollable(hs, init) {
		t.Error("three unsealed nodes with stored shares: not rollable")
	}
	// A node a killed roll left sealed is unsealed, then the roll goes on.
	if !rollable(append(slices.Clone(hs[:2]), nodeHealth{node: inventory.Node{Name: "server-3"}, health: &vaultapi.HealthResponse{Initialized: true, Sealed: true}}), init) {
		t.Error("a sealed node with stored shares: not rollable")
	}
	for name, tc := range map[string]struct {
		hs   []nodeHealth
		init *InitData
	}{
		"one node":               {hs[:1], init},
		"no shares":              {hs, nil},
		"pgp shares":             {hs, &InitData{PGPEncrypted: true}},
		"a node down":            {append(slices.Clone(hs[:2]), nodeHealth{node: inventory.Node{Name: "server-3"}, err: errors.New("refused")}), init},
		"a node not initialised": {append(slices.Clone(hs[:2]), nodeHealth{node: inventory.Node{Name: "server-3"}, health: &vaultapi.HealthResponse{Sealed: true}}), init},
	} {
		if rollable(tc.hs, tc.init) {
			t.Errorf("%s: rollable, want the nodes converged together", name)
		}
	}
}
