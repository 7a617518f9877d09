package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/keys"
)

// Keyring is a cluster's gossip keyring, changed through its API: every
// member takes each change, none restarts.
type Keyring interface {
	// Keys lists every key installed on any member.
	Keys(ctx context.Context) ([]string, error)
	// Alive lists the members that are alive now, by node name.
	Alive(ctx context.Context) ([]string, error)
	Install(ctx context.Context, key string) error
	Use(ctx context.Context, key string) error
	Remove(ctx context.Context, key string) error
}

// RotateGossip replaces the gossip key of a cluster whose key is the secret
// name: a new key is stored first (as name + ".next"), installed on every
// member, made the primary, stored as the key, and then every other key is
// removed. Members keep talking throughout: each of them accepts both keys
// until the old one goes. A run killed anywhere carries on with the same
// new key; one killed after the new key was stored finishes by removing the
// old one in the next rotation.
//
// Every node in members must be alive first: one that is down would come
// back with the old key alone, unable to gossip with anyone.
func RotateGossip(ctx context.Context, e *stages.Env, product, name string, ring Keyring, members []inventory.Node) error {
	alive, err := ring.Alive(ctx)
	if err != nil {
		return fmt.Errorf("%s: list gossip members: %w", product, err)
	}
	var down []string
	for _, n := range members {
		if !slices.Contains(alive, n.Name) {
			down = append(down, n.Name)
		}
	}
	if len(down) > 0 {
		return fmt.Errorf("%s: %s not alive in the gossip pool, nothing rotated: run `bootstrap up` to bring them back, then rotate again", product, strings.Join(down, ", "))
	}
	next, _, err := e.Secrets.GetOrCreate(name+".next", keys.GossipKey)
	if err != nil {
		return err
	}
	if err := ring.Install(ctx, next); err != nil {
		return fmt.Errorf("%s: install the new gossip key: %w", product, err)
	}
	crashpoint.Hit(product + ":gossip-after-install")
	if err := ring.Use(ctx, next); err != nil {
		return fmt.Errorf("%s: use the new gossip key: %w", product, err)
	}
	if err := e.Secrets.Put(name, next); err != nil {
		return err
	}
	if err := e.Secrets.Delete(name + ".next"); err != nil {
		return err
	}
	crashpoint.Hit(product + ":gossip-after-use")
	installed, err := ring.Keys(ctx)
	if err != nil {
		return fmt.Errorf("%s: list gossip keys: %w", product, err)
	}
	for _, k := range installed {
		if k == next {
			continue
		}
		if err := ring.Remove(ctx, k); err != nil {
			return fmt.Errorf("%s: remove an old gossip key: %w", product, err)
		}
	}
	e.Step("%s gossip key rotated; %d old key(s) removed", product, len(installed)-1)
	return nil
}
