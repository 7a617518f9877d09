package nomad

import (
	"context"
	"maps"
	"slices"
	"strings"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// keyring is the gossip keyring of Nomad's servers (clients do not gossip).
type keyring struct{ c *nomadapi.Client }

func (k keyring) Keys(context.Context) ([]string, error) {
	r, err := k.c.Agent().ListKeys()
	if err != nil {
		return nil, err
	}
	return slices.Sorted(maps.Keys(r.Keys)), nil
}

// Alive names the servers by node: Nomad's member names carry the region.
func (k keyring) Alive(context.Context) ([]string, error) {
	ms, err := k.c.Agent().Members()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms.Members {
		if m.Status == "alive" {
			out = append(out, strings.TrimSuffix(m.Name, "."+m.Tags["region"]))
		}
	}
	return out, nil
}

func (k keyring) Install(_ context.Context, key string) error {
	_, err := k.c.Agent().InstallKey(key)
	return err
}

func (k keyring) Use(_ context.Context, key string) error {
	_, err := k.c.Agent().UseKey(key)
	return err
}

func (k keyring) Remove(_ context.Context, key string) error {
	_, err := k.c.Agent().RemoveKey(key)
	return err
}

// RotateGossip replaces the Nomad servers' gossip key through the keyring
// API (see cluster.RotateGossip).
func RotateGossip(ctx context.Context, e *stages.Env) error {
	inv, err := e.Inventory()
	if err != nil {
		return err
	}
	c, err := serverClient(ctx, e)
	if err != nil {
		return err
	}
	return cluster.RotateGossip(ctx, e, "nomad", stages.SecretNomadGossipKey, keyring{c}, inv.WithRole(inventory.RoleServer))
}
