package consul

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// serverClient returns a management client of a server of a cluster that
// has a leader.
func serverClient(ctx context.Context, e *stages.Env) (*consulapi.Client, error) {
	inv, err := e.Inventory()
	if err != nil {
		return nil, err
	}
	tok, _, err := e.Secrets.Get(stages.SecretConsulBootstrapToken)
	if err != nil {
		return nil, err
	}
	as := service(e).Probe(ctx, inv.WithRole(inventory.RoleServer))
	if as.Leader() == "" {
		return nil, errors.New("consul has no leader; run bootstrap up first")
	}
	return cluster.ConsulAgent(e, as.Server(), strings.TrimSpace(tok))
}

// Snapshot writes a snapshot of Consul's state, taken by its leader, to w
// and returns the version of Consul that took it.
func Snapshot(ctx context.Context, e *stages.Env, w io.Writer) (string, error) {
	c, err := serverClient(ctx, e)
	if err != nil {
		return "", err
	}
	self, err := c.Agent().Self()
	if err != nil {
		return "", fmt.Errorf("consul: %w", err)
	}
	version, _ := self["Config"]["Version"].(string)
	var snap io.ReadCloser
	err = poll.Retry(ctx, 30*time.Second, time.Second, func() error {
		var err error
		snap, _, err = c.Snapshot().Save((&consulapi.QueryOptions{}).WithContext(ctx))
		return err
	}, func(err error) bool { return !cluster.ForwardBroken(err) && !cluster.LeaderChanging(err) })
	if err != nil {
		return "", fmt.Errorf("consul snapshot: %w", err)
	}
	defer snap.Close()
	if _, err := io.Copy(w, snap); err != nil {
		return "", fmt.Errorf("consul snapshot: %w", err)
	}
	return version, nil
}

const restoreDetail = "from the backup: KV, ACL policies and tokens, intentions and the catalog"

// restore puts the backup's snapshot into the new cluster, right after
// its ACL bootstrap with the backup's management token, and removes the
// backup's nodes from the catalog. Restoring it again after a kill
// restores the same state.
func restore(ctx context.Context, e *stages.Env, inv *inventory.Inventory, server inventory.Node, mgmt, snap string) error {
	live := map[string]string{} // node name -> this platform's node ID
	for _, n := range inv.Nodes {
		c, err := cluster.ConsulAgent(e, n, mgmt)
		if err != nil {
			return err
		}
		// An agent knows the management token once the bootstrap has
		// reached its server.
		err = poll.Retry(ctx, time.Minute, 300*time.Millisecond, func() error {
			self, err := c.Agent().Self()
			if err == nil {
				live[n.Name], _ = self["Config"]["NodeID"].(string)
			}
			return err
		}, poll.Never)
		if err != nil {
			return fmt.Errorf("consul on %s: %w", n.Name, err)
		}
	}
	c, err := cluster.ConsulAgent(e, server, mgmt)
	if err != nil {
		return err
	}
	err = cluster.RestoreSnapshot(ctx, snap, func(r io.Reader) error {
		return c.Snapshot().Restore((&consulapi.WriteOptions{}).WithContext(ctx), r)
	})
	if err != nil {
		return fmt.Errorf("restore the backup's consul snapshot: %w", err)
	}
	crashpoint.Hit("consul:after-restore-snapshot")
	// The backup's catalog holds the old platform's nodes under the names
	// of this one's, and Consul refuses an agent whose name another node
	// ID holds. Removing them lets each agent register itself and its
	// services again.
	nodes, _, err := c.Catalog().Nodes((&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul: list nodes: %w", err)
	}
	for _, n := range nodes {
		if live[n.Node] == n.ID {
			continue
		}
		dereg := &consulapi.CatalogDeregistration{Node: n.Node, Datacenter: n.Datacenter}
		if _, err := c.Catalog().Deregister(dereg, (&consulapi.WriteOptions{}).WithContext(ctx)); err != nil {
			return fmt.Errorf("consul: remove node %s of the backup's platform: %w", n.Node, err)
		}
	}
	return e.RestoreDone("consul")
}
