package testcluster

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// agents is what StartConsul and StartNomad share: servers that must agree
// on a leader, an ACL system bootstrapped once, then clients that must
// register; each agent runs in its own directory under dir from one config
// file. What differs (the config, how to ask for the leader, how to
// bootstrap, what "registered" means) is passed in.
type agents struct {
	t                   testing.TB
	kind                string // "consul" or "nomad": the binary and the prefix of messages
	bin, dir            string
	port                string // of the HTTP API
	configFlag          string // names the config file on the command line
	servers, clients    []*Proc
	httpAddrs, dataDirs []string // servers', then clients'
}

func newAgents(t testing.TB, kind, port, configFlag string) *agents {
	t.Helper()
	return &agents{t: t, kind: kind, bin: Bin(t, kind), dir: tempRoot(t, kind), port: port, configFlag: configFlag}
}

// dataDir is where the agent called name keeps its state.
func (a *agents) dataDir(name string) string { return filepath.Join(a.dir, name, "data") }

// start starts the agent called name, listening on ip, with config.
func (a *agents) start(name, ip, config string) *Proc {
	a.t.Helper()
	cfg := filepath.Join(a.dir, name, "agent.hcl")
	writeConfig(a.t, cfg, config)
	a.dataDirs = append(a.dataDirs, a.dataDir(name))
	a.httpAddrs = append(a.httpAddrs, "http://"+ip+":"+a.port)
	return Start(a.t, name, a.bin, []string{"agent", a.configFlag + cfg}, filepath.Dir(cfg))
}

// wait is mustWait with the kind of cluster in the message.
func (a *agents) wait(what string, procs []*Proc, check func(context.Context) error) {
	a.t.Helper()
	mustWait(a.t, a.kind+": "+what, procs, check)
}

// waitLeader waits until every server names the same leader; leader asks
// server i.
func (a *agents) waitLeader(leader func(ctx context.Context, i int) (string, error)) {
	a.t.Helper()
	a.wait("wait for a leader all servers agree on", a.servers, func(ctx context.Context) error {
		agreed := ""
		for i, p := range a.servers {
			l, err := leader(ctx, i)
			if err != nil {
				return fmt.Errorf("%s: %w", p.Name, err)
			}
			if l == "" || (agreed != "" && l != agreed) {
				return fmt.Errorf("%s: leader %q, others %q", p.Name, l, agreed)
			}
			agreed = l
		}
		return nil
	})
}

// bootstrapACL bootstraps the ACL system and returns the management token,
// redacted from the servers' logs. An error containing done means an
// earlier attempt succeeded but its reply was lost: retrying cannot help.
func (a *agents) bootstrapACL(done string, boot func(context.Context) (string, error)) string {
	a.t.Helper()
	var token string
	a.wait("ACL bootstrap", a.servers, func(ctx context.Context) error {
		var err error
		if token, err = boot(ctx); err != nil && strings.Contains(err.Error(), done) {
			return permanent{err}
		}
		return err
	})
	for _, p := range a.servers {
		p.Redact(token)
	}
	return token
}

// waitListed waits, while every agent keeps running, until list names each
// of want; state says what being listed means ("in the catalog").
func (a *agents) waitListed(state string, want []*Proc, list func(context.Context) (map[string]bool, error)) {
	a.t.Helper()
	a.wait("wait until each is "+state, slices.Concat(a.servers, a.clients), func(ctx context.Context) error {
		have, err := list(ctx)
		if err != nil {
			return err
		}
		for _, p := range want {
			if !have[p.Name] {
				return fmt.Errorf("%s is not %s yet", p.Name, state)
			}
		}
		return nil
	})
}

// anyLeader returns the leader as reported by the first running server that
// knows one, waiting for an election in progress to end. Unlike at start,
// a stopped server is no failure: tests stop them on purpose.
func anyLeader(t testing.TB, kind string, servers []*Proc, leader func(ctx context.Context, i int) (string, error)) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var found string
	err := waitFor(ctx, kind+": wait for a leader", func(ctx context.Context) error {
		var errs []string
		for i, p := range servers {
			if !p.Running() {
				continue
			}
			l, err := leader(ctx, i)
			if err == nil && l != "" {
				found = l
				return nil
			}
			errs = append(errs, fmt.Sprintf("%s: %q %v", p.Name, l, err))
		}
		return fmt.Errorf("no running server knows a leader: %s", strings.Join(errs, "; "))
	})
	if err != nil {
		fatal(t, servers, "testcluster: %v", err)
	}
	return found
}

// clientsFor returns an API client with token for each of addrs.
func clientsFor[C any](t testing.TB, addrs []string, newClient func(testing.TB, string, string) C, token string) []C {
	t.Helper()
	cls := make([]C, len(addrs))
	for i, addr := range addrs {
		cls[i] = newClient(t, addr, token)
	}
	return cls
}
