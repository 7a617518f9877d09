package nomad

import (
	"context"
	"maps"
	"slices"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
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
	c, err := serverClient(ctx, e)
	if err != nil {
		return err
	}
	return cluster.RotateGossip(ctx, e, "nomad", stages.SecretNomadGossipKey, keyring{c})
}
