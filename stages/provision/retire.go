package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/ansible"
	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/parallel"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// A node the configuration no longer has leaves the platform in order:
// Nomad drains its allocations onto the other clients (within the drain
// deadline), Consul's client agent leaves the cluster (on SIGTERM it does
// not: a restart keeps its services in the catalog), its agents stop, then
// Nomad forgets the node and Consul prunes it from its members. Each step is safe to repeat, so a run killed halfway finishes on
// the next one: the node stays in the recorded inventory until it is gone.

// removed returns the recorded nodes that want no longer has.
func removed(have, want *inventory.Inventory) []inventory.Node {
	var out []inventory.Node
	if have == nil {
		return nil
	}
	for _, h := range have.Nodes {
		if _, ok := want.Node(h.Name); !ok {
			out = append(out, h)
		}
	}
	return out
}

// refuseServerRemoval reports removed Vault nodes as an error: Vault's
// Raft membership and unseal are not changed by bootstrap once made.
func refuseServerRemoval(cfg *config.Platform, gone []inventory.Node) error {
	var vault []string
	for _, n := range gone {
		if n.Has(inventory.RoleVault) {
			vault = append(vault, n.Name)
		}
	}
	if len(vault) == 0 {
		return nil
	}
	return fmt.Errorf("%s: the configuration removes Vault node(s) %s; removing a Vault server is not supported (Vault's Raft peers are not changed once made). Keep the servers that run Vault (vault { nodes }), or run `bootstrap down` and `up` to rebuild the platform", cfg.Filename, strings.Join(vault, ", "))
}

// retireDetail is what the plan says of a removed node.
func retireDetail(cfg *config.Platform, n inventory.Node) string {
	if n.Has(inventory.RoleClient) {
		return fmt.Sprintf("drains its allocations (deadline %s), stops its services, removes it from Nomad and Consul", cfg.Nomad.DrainDeadline)
	}
	if n.Has(inventory.RoleServer) {
		return "leaves Consul's and Nomad's Raft (one server at a time, quorum kept), stops its services"
	}
	return "stops its services and removes it"
}

// retire takes gone out of the platform and stops them: the servers one at
// a time (see retireServers), then the clients.
func retire(ctx context.Context, e *stages.Env, gone []inventory.Node, want *inventory.Inventory) error {
	var servers []inventory.Node
	gone = slices.DeleteFunc(slices.Clone(gone), func(n inventory.Node) bool {
		if n.Has(inventory.RoleServer) {
			servers = append(servers, n)
			return true
		}
		return false
	})
	// The highest numbered first: server-5 before server-4.
	slices.SortFunc(servers, func(a, b inventory.Node) int { return strings.Compare(b.Name, a.Name) })
	if len(servers) > 0 {
		if err := retireServers(ctx, e, servers, want.WithRole(inventory.RoleServer)); err != nil {
			return err
		}
	}
	if len(gone) == 0 {
		return nil
	}
	nc, cc, err := clusterClients(e)
	if err != nil {
		return err
	}
	if nc != nil {
		if err := drain(ctx, e, nc, gone); err != nil {
			return err
		}
	}
	crashpoint.Hit("provision:after-drain")
	for _, n := range gone {
		if _, err := consulLeave(e, n); err != nil {
			return err
		}
	}
	var local, remote []inventory.Node
	for _, n := range gone {
		if n.Local != nil {
			local = append(local, n)
		} else {
			remote = append(remote, n)
		}
	}
	e.Step("stopping node(s) %s", strings.Join(inventory.Names(gone), ", "))
	if err := parallel.Each(local, func(n inventory.Node) error { return removeLocalNode(ctx, n) }); err != nil {
		return err
	}
	if len(remote) > 0 {
		if err := ansible.Teardown(ctx, e, &inventory.Inventory{Version: inventory.Version, Nodes: remote}); err != nil {
			return err
		}
	}
	crashpoint.Hit("provision:after-stop")
	return parallel.Each(gone, func(n inventory.Node) error { return forget(e, nc, cc, n) })
}

// clusterClients returns management clients of the Nomad and Consul servers,
// nil for a cluster whose ACLs are not bootstrapped yet (nothing to drain or
// forget there).
func clusterClients(e *stages.Env) (*nomadapi.Client, *consulapi.Client, error) {
	get := func(name string) (string, error) {
		v, ok, err := e.Secrets.Get(name)
		if err != nil || !ok {
			return "", err
		}
		return strings.TrimSpace(v), nil
	}
	var nc *nomadapi.Client
	var cc *consulapi.Client
	if tok, err := get(stages.SecretNomadBootstrapToken); err != nil {
		return nil, nil, err
	} else if tok != "" && e.State.Output(stages.OutNomadAddr) != "" {
		if nc, err = cluster.NomadServer(e, tok); err != nil {
			return nil, nil, err
		}
	}
	if tok, err := get(stages.SecretConsulBootstrapToken); err != nil {
		return nil, nil, err
	} else if addr := e.State.Output(stages.OutConsulAddr); tok != "" && addr != "" {
		if cc, err = cluster.ConsulClient(addr, e.CAFile("consul"), e.ConsulServerName(), tok); err != nil {
			return nil, nil, err
		}
	}
	return nc, cc, nil
}

// nomadNode finds the Nomad node named name; nil when Nomad has none.
func nomadNode(nc *nomadapi.Client, name string) (*nomadapi.NodeListStub, error) {
	nodes, _, err := nc.Nodes().List(nil)
	if err != nil {
		return nil, fmt.Errorf("list nomad nodes: %w", err)
	}
	for _, n := range nodes {
		if n.Name == name {
			return n, nil
		}
	}
	return nil, nil
}

// drain drains the clients of gone and waits until none has an
// allocation left: the deadline stops those that could not move in time.
// Every drain starts before any is waited for, so that an allocation
// leaving one of them is not placed on another that is about to go.
func drain(ctx context.Context, e *stages.Env, nc *nomadapi.Client, gone []inventory.Node) error {
	deadline, err := config.ParseDuration(e.Config.Nomad.DrainDeadline)
	if err != nil {
		return fmt.Errorf("drain_deadline: %w", err)
	}
	var ids []string
	for _, n := range gone {
		if !n.Has(inventory.RoleClient) {
			continue
		}
		node, err := nomadNode(nc, n.Name)
		if err != nil {
			return err
		}
		if node == nil || node.Status == nomadapi.NodeStatusDown {
			continue
		}
		ids = append(ids, node.ID)
		if node.Drain {
			e.Step("waiting for the drain of %s", n.Name)
			continue
		}
		e.Step("draining %s (deadline %s)", n.Name, e.Config.Nomad.DrainDeadline)
		opts := &nomadapi.DrainOptions{DrainSpec: &nomadapi.DrainSpec{Deadline: deadline}}
		if _, err := nc.Nodes().UpdateDrainOpts(node.ID, opts, nil); err != nil {
			return fmt.Errorf("drain %s: %w", n.Name, err)
		}
	}
	// Nomad clears the drain strategy once every allocation has left the
	// node; the margin covers the stop of those the deadline ends.
	err = poll.Until(ctx, deadline+time.Minute, time.Second, func() (bool, error) {
		for _, id := range ids {
			info, _, err := nc.Nodes().Info(id, nil)
			if err != nil || info.DrainStrategy != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("drain: not finished %s after its deadline: %w", time.Minute, err)
	}
	return nil
}

// forget removes a stopped node from Nomad's node list and Consul's members.
func forget(e *stages.Env, nc *nomadapi.Client, cc *consulapi.Client, n inventory.Node) error {
	var errs []error
	if nc != nil && n.Has(inventory.RoleClient) {
		node, err := nomadNode(nc, n.Name)
		if err == nil && node != nil {
			_, _, err = nc.Nodes().Purge(node.ID, nil)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove %s from nomad: %w", n.Name, err))
		}
	}
	if cc != nil {
		members, err := cc.Agent().Members(false)
		if err == nil {
			for _, m := range members {
				if m.Name == n.Name {
					err = cc.Agent().ForceLeavePrune(n.Name)
				}
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove %s from consul: %w", n.Name, err))
		}
	}
	if len(errs) == 0 {
		e.Step("node %s removed from the platform", n.Name)
	}
	return errors.Join(errs...)
}
