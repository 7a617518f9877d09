package nomad

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// serverClient returns a management client of a server of a cluster that
// has a leader.
func serverClient(ctx context.Context, e *stages.Env) (*nomadapi.Client, error) {
	inv, err := e.Inventory()
	if err != nil {
		return nil, err
	}
	tok, _, err := e.Secrets.Get(stages.SecretNomadBootstrapToken)
	if err != nil {
		return nil, err
	}
	as := service(e).Probe(ctx, inv.WithRole(inventory.RoleServer))
	if as.Leader() == "" {
		return nil, errors.New("nomad has no leader; run bootstrap up first")
	}
	return cluster.NomadAgent(e, as.Server(), strings.TrimSpace(tok))
}

// Snapshot writes a snapshot of Nomad's state, taken by its leader, to w
// and returns the version of Nomad that took it.
func Snapshot(ctx context.Context, e *stages.Env, w io.Writer) (string, error) {
	c, err := serverClient(ctx, e)
	if err != nil {
		return "", err
	}
	self, err := c.Agent().Self()
	if err != nil {
		return "", fmt.Errorf("nomad: %w", err)
	}
	snap, err := c.Operator().Snapshot((&nomadapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("nomad snapshot: %w", err)
	}
	defer snap.Close()
	if _, err := io.Copy(w, snap); err != nil {
		return "", fmt.Errorf("nomad snapshot: %w", err)
	}
	return self.Member.Tags["build"], nil
}

const restoreDetail = "from the backup: jobs, namespaces, variables, ACL policies and tokens; the old platform's client nodes are purged"

// restore puts the backup's snapshot into the new cluster, right after its
// ACL bootstrap with the backup's management token, and purges the client
// nodes the snapshot knows that are not this platform's: their
// allocations are rescheduled at once instead of after the heartbeat
// grace. Restoring again after a kill restores the same state.
func restore(ctx context.Context, e *stages.Env, inv *inventory.Inventory, server inventory.Node, mgmt, snap string) error {
	live := map[string]bool{}
	for _, n := range inv.WithRole(inventory.RoleClient) {
		c, err := cluster.NomadAgent(e, n, mgmt)
		if err != nil {
			return err
		}
		err = poll.Retry(ctx, time.Minute, 300*time.Millisecond, func() error {
			self, err := c.Agent().Self()
			if err == nil {
				live[self.Stats["client"]["node_id"]] = true
			}
			return err
		}, poll.Never)
		if err != nil {
			return fmt.Errorf("nomad on %s: %w", n.Name, err)
		}
	}
	c, err := cluster.NomadAgent(e, server, mgmt)
	if err != nil {
		return err
	}
	w := (&nomadapi.WriteOptions{}).WithContext(ctx)
	err = cluster.RestoreSnapshot(ctx, snap, func(r io.Reader) error {
		_, err := c.Operator().SnapshotRestore(r, w)
		return err
	})
	if err != nil {
		return fmt.Errorf("restore the backup's nomad snapshot: %w", err)
	}
	crashpoint.Hit("nomad:after-restore-snapshot")
	q := (&nomadapi.QueryOptions{}).WithContext(ctx)
	nodes, _, err := c.Nodes().List(q)
	if err != nil {
		return fmt.Errorf("nomad: list nodes: %w", err)
	}
	// No new allocation may go to an old node while the others are purged.
	for _, n := range nodes {
		if !live[n.ID] {
			if _, err := c.Nodes().ToggleEligibility(n.ID, false, w); err != nil {
				return fmt.Errorf("nomad: mark node %s (%s) of the backup's platform ineligible: %w", n.Name, n.ID, err)
			}
		}
	}
	for _, n := range nodes {
		if live[n.ID] {
			continue
		}
		if _, _, err := c.Nodes().Purge(n.ID, q); err != nil {
			return fmt.Errorf("nomad: purge node %s (%s) of the backup's platform: %w", n.Name, n.ID, err)
		}
	}
	// An allocation the scheduler placed on an old node before it was
	// marked would wait for that node forever: stop it, so it is placed
	// again on this platform's clients.
	for range 10 {
		allocs, _, err := c.Allocations().List((&nomadapi.QueryOptions{Namespace: "*"}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("nomad: list allocations: %w", err)
		}
		for _, a := range allocs {
			if a.DesiredStatus == nomadapi.AllocDesiredStatusRun && !live[a.NodeID] {
				if _, err := c.Allocations().Stop(&nomadapi.Allocation{ID: a.ID, Namespace: a.Namespace}, q); err != nil {
					return fmt.Errorf("nomad: stop allocation %s on a node of the backup's platform: %w", a.ID, err)
				}
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return e.RestoreDone("nomad")
}
