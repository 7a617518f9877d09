// Package cluster is what the Consul and Nomad stages share: TLS for their
// API clients, asking every node's agent who leads, waiting for a leader,
// and the crash-safe ACL bootstrap.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// TLS returns the TLS configuration of an API client that trusts caFile and
// accepts only a certificate valid for serverName, or, when serverName is
// empty, one that names a server: a client node's certificate is refused
// even when it carries the dialled address.
func TLS(caFile, serverName string) (*tls.Config, error) {
	tc, err := apitls.Config(caFile, serverName)
	if err != nil {
		return nil, err
	}
	if serverName == "" {
		apitls.RequireServer(tc)
	}
	return tc, nil
}

// Service is one of the clustered services, Consul or Nomad.
type Service struct {
	Name string // "consul" or "nomad", as in messages and log files
	// Leader asks the agent of node n which server leads. It needs no
	// token.
	Leader func(ctx context.Context, n inventory.Node) (string, error)
	// Beside, when set, checks what the start play starts on node n next
	// to the agent (node-exporter on the Nomad servers) and returns what
	// does not run, "" when all does.
	Beside func(ctx context.Context, n inventory.Node) string
}

// Agent is what one node's agent said.
type Agent struct {
	Node   inventory.Node
	Leader string
	Err    error
	// Missing is what Beside found not running next to the agent.
	Missing string
}

// Up reports whether the agent answered.
func (a Agent) Up() bool { return a.Err == nil }

// Agents are the answers of every node, in inventory order.
type Agents []Agent

// Probe asks the agent of every node who leads, all at once: an agent
// that does not answer costs its timeout once, not once per node.
func (s Service) Probe(ctx context.Context, nodes []inventory.Node) Agents {
	out := make(Agents, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			a := Agent{Node: n}
			a.Leader, a.Err = s.Leader(ctx, n)
			if a.Err == nil && s.Beside != nil {
				a.Missing = s.Beside(ctx, n)
			}
			out[i] = a
		})
	}
	wg.Wait()
	return out
}

// stopped are the agents the start play must run for: those that do not
// answer, and those with something missing beside them.
func (as Agents) stopped() []Agent {
	var out []Agent
	for _, a := range as {
		if !a.Up() || a.Missing != "" {
			out = append(out, a)
		}
	}
	return out
}

// Leader is the leader some agent that answered named, or "".
func (as Agents) Leader() string {
	for _, a := range as {
		if a.Up() && a.Leader != "" {
			return a.Leader
		}
	}
	return ""
}

// LeaderNode is the name of the node whose address the leader has, or "".
func (as Agents) LeaderNode() string {
	host, _, err := net.SplitHostPort(as.Leader())
	if err != nil {
		return ""
	}
	for _, a := range as {
		if a.Node.PrivateIP == host || a.Node.PublicIP == host {
			return a.Node.Name
		}
	}
	return ""
}

// Down names the nodes whose agent did not answer.
func (as Agents) Down() []string {
	var out []string
	for _, a := range as {
		if !a.Up() {
			out = append(out, a.Node.Name)
		}
	}
	return out
}

// IsUp reports whether node's agent answered.
func (as Agents) IsUp(node string) bool {
	for _, a := range as {
		if a.Node.Name == node {
			return a.Up()
		}
	}
	return false
}

// Server returns the first server whose agent answered, or else the first
// server: reads then do not depend on any one server being up.
func (as Agents) Server() inventory.Node {
	var first *inventory.Node
	for _, a := range as {
		if a.Node.Has(inventory.RoleServer) {
			if a.Up() {
				return a.Node
			}
			if first == nil {
				first = &a.Node
			}
		}
	}
	if first == nil {
		return inventory.Node{}
	}
	return *first
}

// Converge records installing the service on the nodes whose Ansible
// inputs changed (pending: node → why) and starting it on every node whose
// agent does not answer. Applying runs the play, run, once, on those nodes
// only: a new client or a dead agent leaves the others alone. startOnly
// tells run that no node's inputs changed: its agents need starting only.
func (s Service) Converge(p *reconcile.Plan, pending map[string]string, as Agents, run func(hosts []string, startOnly bool) error) error {
	hosts := slices.Sorted(maps.Keys(pending))
	for _, a := range as.stopped() {
		if _, ok := pending[a.Node.Name]; !ok {
			hosts = append(hosts, a.Node.Name)
		}
	}
	do := func() error { return run(hosts, len(pending) == 0) }
	// One change for every node, or for the servers, when they share why.
	why, on := sameReason(pending), ""
	switch {
	case why == "" || len(pending) < 2:
	case len(pending) == len(as):
		on = "every node"
	case as.serversOnly(pending):
		on = "the servers"
	}
	if on != "" {
		switch {
		case on == "every node" && strings.HasPrefix(why, stages.ReasonNewBinaries):
			why += "; running agents restart one at a time: the servers, the leader last, then the clients"
		case as.runningServers(pending) > 1:
			why += "; running servers restart one at a time, the leader last"
		}
		if err := p.Do(reconcile.Install, s.Name+" on "+on, why, do); err != nil {
			return err
		}
		do = nil
	} else {
		for _, node := range slices.Sorted(maps.Keys(pending)) {
			if err := p.Do(reconcile.Install, s.Name+" on "+node, pending[node], do); err != nil {
				return err
			}
			do = nil
		}
	}
	for _, a := range as.stopped() {
		target, why := s.Name+" on "+a.Node.Name, "not answering"
		if a.Up() {
			target, why = a.Missing+" on "+a.Node.Name, "not running"
		}
		if err := p.Do(reconcile.Start, target, why, do); err != nil {
			return err
		}
		do = nil
	}
	return nil
}

// runningServers counts the pending nodes that are servers whose agent
// answers: those restart one by one if their configuration changed.
func (as Agents) runningServers(pending map[string]string) int {
	n := 0
	for _, a := range as {
		if _, ok := pending[a.Node.Name]; ok && a.Up() && a.Node.Has(inventory.RoleServer) {
			n++
		}
	}
	return n
}

// serversOnly says whether the pending nodes are the servers, every one.
func (as Agents) serversOnly(pending map[string]string) bool {
	for _, a := range as {
		if _, ok := pending[a.Node.Name]; ok != a.Node.Has(inventory.RoleServer) {
			return false
		}
	}
	return true
}

// sameReason is the reason every pending node shares, or "".
func sameReason(pending map[string]string) string {
	why := ""
	for _, r := range pending {
		if why != "" && r != why {
			return ""
		}
		why = r
	}
	return why
}

// WaitLeader waits until every agent of inv answers, with what runs beside
// it, and the servers agree on a leader, and returns the agents' answers.
func (s Service) WaitLeader(ctx context.Context, inv *inventory.Inventory) (Agents, error) {
	var as Agents
	err := poll.Retry(ctx, 2*time.Minute, 500*time.Millisecond, func() error {
		as = s.Probe(ctx, inv.Nodes)
		if down := as.Down(); len(down) > 0 {
			return fmt.Errorf("%s does not answer on %s; see %s", s.Name, strings.Join(down, ", "), s.LogHint(inv, down[0]))
		}
		for _, a := range as {
			if a.Missing != "" {
				return fmt.Errorf("%s does not run on %s", a.Missing, a.Node.Name)
			}
		}
		if as.Leader() == "" {
			return fmt.Errorf("%s servers elected no leader; see %s", s.Name, s.LogHint(inv, inv.WithRole(inventory.RoleServer)[0].Name))
		}
		return nil
	}, func(error) bool { return false })
	return as, err
}

// LogHint says where to read the log of the service on node.
func (s Service) LogHint(inv *inventory.Inventory, node string) string {
	if n, _ := inv.Node(node); n.Local != nil {
		return n.Local.Root + "/logs/" + s.Name + ".log"
	}
	return "journalctl -u " + s.Name + " on " + node
}

// Status is the status line of one agent: its role, whether it leads, and
// healthy when it answers and the cluster has a leader.
func (s Service) Status(a Agent, leader string) stages.StatusLine {
	l := stages.StatusLine{Component: s.Name, Node: a.Node.Name}
	role := "client"
	if a.Node.Has(inventory.RoleServer) {
		role = "server"
	}
	switch {
	case !a.Up():
		l.State = "down"
	case leader != "" && strings.HasPrefix(leader, a.Node.Address()+":"):
		l.State, l.Healthy = role+", leader", true
	default:
		l.State, l.Healthy = role, leader != ""
	}
	if a.Missing != "" {
		l.Detail, l.Healthy = a.Missing+" not running", false
	}
	return l
}

// Outputs are the outputs a stage records (*stages.State).
type Outputs interface {
	Output(key string) string
	SetOutput(key, value string) error
}

// RecordOutputs records, and sets when p applies, each output in want that
// differs from what s holds: where later stages and `bootstrap env` find
// the cluster.
func RecordOutputs(p *reconcile.Plan, s Outputs, want map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if s.Output(k) == want[k] {
			continue
		}
		if err := p.Do(reconcile.Record, "output "+k, want[k], func() error { return s.SetOutput(k, want[k]) }); err != nil {
			return err
		}
	}
	return nil
}

// RaftIndexes reports a server's Raft applied and commit indexes.
type RaftIndexes func(ctx context.Context, n inventory.Node) (applied, commit uint64, err error)

// WaitCaughtUp waits until every server has applied what the cluster had
// committed, and answers. A server that was just restarted answers, and
// votes, before it has replayed the log written since its last snapshot:
// until then it refuses newer ACL tokens with 403 on the endpoints it
// serves itself (agent calls, Nomad's job parsing).
func (s Service) WaitCaughtUp(ctx context.Context, inv *inventory.Inventory, indexes RaftIndexes) error {
	servers := inv.WithRole(inventory.RoleServer)
	var target uint64
	err := poll.Retry(ctx, 2*time.Minute, 500*time.Millisecond, func() error {
		var behind []string
		applied := map[string]uint64{}
		for _, n := range servers {
			ai, ci, err := indexes(ctx, n)
			if err != nil {
				behind = append(behind, n.Name+" ("+err.Error()+")")
				continue
			}
			applied[n.Name] = ai
			target = max(target, ci)
		}
		for _, n := range servers {
			if ai, ok := applied[n.Name]; ok && ai < target {
				behind = append(behind, fmt.Sprintf("%s (applied index %d of %d)", n.Name, ai, target))
			}
		}
		if len(behind) > 0 {
			return errors.New(strings.Join(behind, ", "))
		}
		return nil
	}, func(error) bool { return false })
	if err != nil {
		return fmt.Errorf("%s servers have not caught up with the cluster: %w; see %s", s.Name, err, s.LogHint(inv, servers[0].Name))
	}
	return nil
}

// LeaderChanging reports whether err is a Raft write that failed because
// the cluster's leadership moved while it ran (an election right after a
// server restarted): the same write can be made again once a new leader
// is in place.
func LeaderChanging(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	for _, m := range []string{
		"leadership lost while committing log", // raft.ErrLeadershipLost
		"node is not the leader",               // raft.ErrNotLeader
		"leadership transfer in progress",      // raft.ErrLeadershipTransferInProgress
		"No cluster leader",                    // consul and nomad structs.ErrNoLeader
	} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

// ForwardBroken reports whether err is a request a server forwarded to
// its leader over a pooled connection that broke (the leader restarted
// since): asked again, the server dials anew.
func ForwardBroken(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "connection reset by peer") || strings.Contains(s, "broken pipe") ||
		strings.Contains(s, "rpc error") && strings.HasSuffix(strings.TrimRight(s, ")"), "EOF")
}

// RetryLeaderChange makes a write again, for up to a minute, while it
// fails because the leadership moved under it. The write must be
// idempotent (a snapshot restore is: the same state again).
func RetryLeaderChange(ctx context.Context, write func() error) error {
	return poll.Retry(ctx, time.Minute, time.Second, write, func(err error) bool { return !LeaderChanging(err) })
}

// RestoreSnapshot sends the snapshot in file with restore, again while
// the leadership moves under it (RetryLeaderChange). Each attempt reads
// the file anew: the HTTP client closes a request's body once sent, so a
// second attempt could not rewind the first one's.
func RestoreSnapshot(ctx context.Context, file string, restore func(io.Reader) error) error {
	return RetryLeaderChange(ctx, func() error {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		return restore(f)
	})
}
