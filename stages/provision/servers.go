package provision

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/ansible"
	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// A server leaves one at a time, so quorum holds throughout: Consul's agent
// leaves gracefully (it leaves Raft and the gossip pool, then exits), the
// node's services stop, Nomad's Raft and gossip pool drop it, and the
// remaining servers of both must have a leader and one voter each before
// the next server goes. The agents elsewhere learn of it through gossip and
// heartbeats; their join.hcl follows in the consul and nomad stages without
// a restart. Every step is safe to repeat after a kill.

// raftCluster is one of Consul's and Nomad's Raft clusters as seen from a
// remaining server.
type raftCluster struct {
	name string
	// peers returns the Raft servers (address → ID) and whether one leads.
	peers func(ctx context.Context) (ids map[string]string, leader bool, err error)
	// remove takes the server with Raft ID id out of Raft (by ID: removal
	// by address is refused with Raft protocol 3).
	remove func(ctx context.Context, id string) error
	// forget prunes n from the gossip pool, where a server that left
	// stays listed as "left" for days otherwise.
	forget func(ctx context.Context, n inventory.Node) error
}

// retireServers takes the servers of gone out of the platform, one at a
// time, with the servers of stay left.
func retireServers(ctx context.Context, e *stages.Env, gone, stay []inventory.Node) error {
	rafts, err := raftClusters(e, stay)
	if err != nil {
		return err
	}
	for i, n := range gone {
		// The servers still to go after n are in Raft yet.
		if err := retireServer(ctx, e, n, len(stay)+len(gone)-i-1, rafts); err != nil {
			return fmt.Errorf("remove server %s: %w", n.Name, err)
		}
	}
	return nil
}

func retireServer(ctx context.Context, e *stages.Env, n inventory.Node, left int, rafts []raftCluster) error {
	e.Step("server %s leaves consul and nomad", n.Name)
	// An agent that is down already is removed from Raft below instead.
	if left, err := consulLeave(e, n); err != nil {
		return err
	} else if left {
		crashpoint.Hit("provision:server-after-leave")
	}
	if n.Local != nil {
		if err := removeLocalNode(ctx, n); err != nil {
			return err
		}
	} else if err := ansible.Teardown(ctx, e, &inventory.Inventory{Version: inventory.Version, Nodes: []inventory.Node{n}}); err != nil {
		return err
	}
	crashpoint.Hit("provision:server-after-stop")
	for _, r := range rafts {
		start := time.Now()
		if err := leaveRaft(ctx, r, n, left); err != nil {
			return err
		}
		e.Logf("%s: %s is out of raft and the gossip pool (%s)", r.name, n.Name, time.Since(start).Round(time.Second))
	}
	e.Step("server %s removed: %d servers left", n.Name, left)
	return nil
}

// consulLeave makes n's Consul agent leave the cluster gracefully (it
// leaves the gossip pool, and Raft for a server, then exits), reporting
// whether it did; one that does not answer is pruned later instead.
func consulLeave(e *stages.Env, n inventory.Node) (bool, error) {
	tok, ok, err := e.Secrets.Get(stages.SecretConsulBootstrapToken)
	if err != nil || !ok {
		return false, err
	}
	c, err := cluster.ConsulAgent(e, n, strings.TrimSpace(tok))
	return err == nil && c.Agent().Leave() == nil, nil
}

// leaveRaft waits until the server n is out of r's Raft (removing it when
// it is still listed) and the remaining servers have a leader.
func leaveRaft(ctx context.Context, r raftCluster, n inventory.Node, want int) error {
	removed := false
	var last string
	err := poll.Until(ctx, 2*time.Minute, time.Second, func() (bool, error) {
		ids, leader, err := r.peers(ctx)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		addrs := slices.Sorted(maps.Keys(ids))
		i := slices.IndexFunc(addrs, func(a string) bool { return strings.HasPrefix(a, n.PrivateIP+":") })
		if i >= 0 && !removed {
			if err := r.remove(ctx, ids[addrs[i]]); err != nil {
				last = err.Error()
				return false, nil
			}
			removed = true
		}
		last = fmt.Sprintf("%d raft peers (%s), leader %v", len(addrs), strings.Join(addrs, ", "), leader)
		return i < 0 && leader && len(addrs) == want, nil
	})
	if err != nil {
		return fmt.Errorf("%s: the remaining servers did not settle without %s (%s): %w", r.name, n.Name, last, err)
	}
	return r.forget(ctx, n)
}

// raftClusters returns the Raft clusters seen from the remaining servers:
// each call asks the first that answers.
func raftClusters(e *stages.Env, stay []inventory.Node) ([]raftCluster, error) {
	var out []raftCluster
	get := func(name string) (string, bool, error) {
		v, ok, err := e.Secrets.Get(name)
		return strings.TrimSpace(v), ok, err
	}
	if tok, ok, err := get(stages.SecretConsulBootstrapToken); err != nil {
		return nil, err
	} else if ok {
		client := func() (*consulapi.Client, error) {
			return firstAnswering(stay, func(s inventory.Node) (*consulapi.Client, error) { return cluster.ConsulAgent(e, s, tok) },
				func(c *consulapi.Client) error { _, err := c.Status().Leader(); return err })
		}
		out = append(out, raftCluster{
			name: "consul",
			peers: func(ctx context.Context) (map[string]string, bool, error) {
				c, err := client()
				if err != nil {
					return nil, false, err
				}
				cfg, err := c.Operator().RaftGetConfiguration((&consulapi.QueryOptions{}).WithContext(ctx))
				if err != nil {
					return nil, false, err
				}
				ids := map[string]string{}
				leader := false
				for _, s := range cfg.Servers {
					ids[string(s.Address)] = string(s.ID)
					leader = leader || s.Leader
				}
				return ids, leader, nil
			},
			remove: func(ctx context.Context, id string) error {
				c, err := client()
				if err != nil {
					return err
				}
				if err := c.Operator().RaftRemovePeerByID(id, (&consulapi.WriteOptions{}).WithContext(ctx)); err != nil {
					return fmt.Errorf("consul: remove raft peer %s: %w", id, err)
				}
				return nil
			},
			forget: func(ctx context.Context, n inventory.Node) error {
				c, err := client()
				if err != nil {
					return err
				}
				members, err := c.Agent().Members(false)
				if err != nil {
					return fmt.Errorf("consul: members: %w", err)
				}
				if !slices.ContainsFunc(members, func(m *consulapi.AgentMember) bool { return m.Name == n.Name }) {
					return nil
				}
				if err := c.Agent().ForceLeavePrune(n.Name); err != nil {
					return fmt.Errorf("consul: prune %s: %w", n.Name, err)
				}
				return nil
			},
		})
	}
	if tok, ok, err := get(stages.SecretNomadBootstrapToken); err != nil {
		return nil, err
	} else if ok {
		client := func() (*nomadapi.Client, error) {
			return firstAnswering(stay, func(s inventory.Node) (*nomadapi.Client, error) { return cluster.NomadAgent(e, s, tok) },
				func(c *nomadapi.Client) error { _, err := c.Status().Leader(); return err })
		}
		out = append(out, raftCluster{
			name: "nomad",
			peers: func(ctx context.Context) (map[string]string, bool, error) {
				c, err := client()
				if err != nil {
					return nil, false, err
				}
				cfg, err := c.Operator().RaftGetConfiguration((&nomadapi.QueryOptions{}).WithContext(ctx))
				if err != nil {
					return nil, false, err
				}
				ids := map[string]string{}
				leader := false
				for _, s := range cfg.Servers {
					ids[string(s.Address)] = string(s.ID)
					leader = leader || s.Leader
				}
				return ids, leader, nil
			},
			remove: func(ctx context.Context, id string) error {
				c, err := client()
				if err != nil {
					return err
				}
				if err := c.Operator().RaftRemovePeerByID(id, (&nomadapi.WriteOptions{}).WithContext(ctx)); err != nil {
					return fmt.Errorf("nomad: remove raft peer %s: %w", id, err)
				}
				return nil
			},
			forget: func(ctx context.Context, n inventory.Node) error {
				c, err := client()
				if err != nil {
					return err
				}
				members, err := c.Agent().Members()
				if err != nil {
					return fmt.Errorf("nomad: members: %w", err)
				}
				// Nomad's servers are gossip members named <node>.<region>.
				name := n.Name + "." + apitls.NomadRegion(e.Config.Region)
				if !slices.ContainsFunc(members.Members, func(m *nomadapi.AgentMember) bool { return m.Name == name }) {
					return nil
				}
				if err := c.Agent().ForceLeaveWithOptions(name, nomadapi.ForceLeaveOpts{Prune: true}); err != nil {
					return fmt.Errorf("nomad: prune %s: %w", name, err)
				}
				return nil
			},
		})
	}
	return out, nil
}

// firstAnswering returns a client of the first server of stay that answers
// ping: any remaining server will do, and one may be restarting.
func firstAnswering[C any](stay []inventory.Node, dial func(inventory.Node) (C, error), ping func(C) error) (C, error) {
	var errs []error
	for _, s := range stay {
		c, err := dial(s)
		if err == nil {
			if err = ping(c); err == nil {
				return c, nil
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", s.Name, err))
	}
	var none C
	return none, errors.Join(errs...)
}
