package consul

import (
	"context"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// keyring is Consul's gossip keyring, LAN and WAN pools alike.
type keyring struct{ c *consulapi.Client }

func (k keyring) Keys(ctx context.Context) ([]string, error) {
	pools, err := k.c.Operator().KeyringList((&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range pools {
		for key := range p.Keys {
			if !seen[key] {
				seen[key] = true
				out = append(out, key)
			}
		}
	}
	return out, nil
}

func (k keyring) Alive(ctx context.Context) ([]string, error) {
	ms, err := k.c.Agent().Members(false)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if memberStatus(m.Status) == "alive" {
			out = append(out, m.Name)
		}
	}
	return out, nil
}

func (k keyring) w(ctx context.Context) *consulapi.WriteOptions {
	return (&consulapi.WriteOptions{}).WithContext(ctx)
}

func (k keyring) Install(ctx context.Context, key string) error {
	return k.c.Operator().KeyringInstall(key, k.w(ctx))
}

func (k keyring) Use(ctx context.Context, key string) error {
	return k.c.Operator().KeyringUse(key, k.w(ctx))
}

func (k keyring) Remove(ctx context.Context, key string) error {
	return k.c.Operator().KeyringRemove(key, k.w(ctx))
}

// RotateGossip replaces Consul's gossip key on every agent through the
// keyring API (see cluster.RotateGossip).
func RotateGossip(ctx context.Context, e *stages.Env) error {
	inv, err := e.Inventory()
	if err != nil {
		return err
	}
	c, err := serverClient(ctx, e)
	if err != nil {
		return err
	}
	return cluster.RotateGossip(ctx, e, "consul", stages.SecretConsulGossipKey, keyring{c}, inv.Nodes)
}
