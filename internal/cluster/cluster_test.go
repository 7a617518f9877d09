package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
)

var (
	errDenied = errors.New("403 denied")
	errDone   = errors.New("bootstrap already done")
	errLocked = errors.New("locked out")
)

// fakeACL is an ACL system that accepts one management token once
// bootstrapped.
type fakeACL struct {
	mgmt       string // "" until bootstrapped
	bootstraps int
	store      *fakeStore
}

type fakeClient struct {
	sys   *fakeACL
	token string
}

func (c fakeClient) Self(context.Context) error {
	if c.sys.mgmt == "" || c.sys.mgmt != c.token {
		return errDenied
	}
	return nil
}

func (c fakeClient) Bootstrap(context.Context) error {
	if c.sys.mgmt != "" {
		return errDone
	}
	// The token must be stored before it is used.
	if v, ok, _ := c.sys.store.Get("mgmt"); !ok || v != c.token {
		return errors.New("bootstrapped with a token that is not stored")
	}
	c.sys.mgmt = c.token
	c.sys.bootstraps++
	return nil
}

type fakeStore map[string]string

func (s *fakeStore) Get(name string) (string, bool, error) {
	v, ok := (*s)[name]
	return v, ok, nil
}

func (s *fakeStore) GetOrCreate(name string, gen func() (string, error)) (string, bool, error) {
	if v, ok := (*s)[name]; ok {
		return v, false, nil
	}
	v, err := gen()
	(*s)[name] = v
	return v, true, err
}

func (s *fakeStore) Path(name string) string { return "/secrets/" + name }

func bootstrap(sys *fakeACL) Bootstrap {
	return Bootstrap{
		Name:      "toy",
		Secret:    "mgmt",
		Client:    func(token string) (ACL, error) { return fakeClient{sys, token}, nil },
		Denied:    func(err error) bool { return errors.Is(err, errDenied) },
		Done:      func(err error) bool { return errors.Is(err, errDone) },
		LockedOut: errLocked,
		ResetURL:  "https://example.com/reset",
	}
}

func TestBootstrapPlansThenApplies(t *testing.T) {
	store := &fakeStore{}
	sys := &fakeACL{store: store}
	b := bootstrap(sys)
	ctx := context.Background()

	p := &reconcile.Plan{}
	if _, ok, err := b.Run(ctx, store, p); err != nil || ok || len(p.Changes) != 1 || p.Changes[0].Action != reconcile.Bootstrap {
		t.Fatalf("plan: ok %v, err %v, changes %v", ok, err, p.Changes)
	}
	if len(*store) != 0 || sys.bootstraps != 0 {
		t.Fatal("planning stored a token or bootstrapped")
	}

	p = &reconcile.Plan{Apply: true}
	mgmt, ok, err := b.Run(ctx, store, p)
	if err != nil || !ok || mgmt == "" || sys.mgmt != mgmt || len(p.Changes) != 1 {
		t.Fatalf("apply: mgmt %q, ok %v, err %v, changes %v", mgmt, ok, err, p.Changes)
	}

	// Converged: neither plan nor apply changes anything.
	for _, apply := range []bool{false, true} {
		p = &reconcile.Plan{Apply: apply}
		again, ok, err := b.Run(ctx, store, p)
		if err != nil || !ok || again != mgmt || len(p.Changes) != 0 || sys.bootstraps != 1 {
			t.Errorf("apply=%v on a bootstrapped system: ok %v, err %v, changes %v, %d bootstraps", apply, ok, err, p.Changes, sys.bootstraps)
		}
	}
}

// A run killed after storing the token and before bootstrapping leaves a
// stored token the system refuses: the next run bootstraps with it.
func TestBootstrapAfterCrashBeforeUse(t *testing.T) {
	store := &fakeStore{"mgmt": "kept"}
	sys := &fakeACL{store: store}
	p := &reconcile.Plan{}
	if _, ok, err := bootstrap(sys).Run(context.Background(), store, p); err != nil || ok || len(p.Changes) != 1 {
		t.Fatalf("plan: ok %v, err %v, changes %v", ok, err, p.Changes)
	}
	mgmt, ok, err := bootstrap(sys).Run(context.Background(), store, &reconcile.Plan{Apply: true})
	if err != nil || !ok || mgmt != "kept" || sys.mgmt != "kept" {
		t.Fatalf("apply: mgmt %q, ok %v, err %v; system token %q", mgmt, ok, err, sys.mgmt)
	}
}

// A system bootstrapped with a token bootstrap does not have is reported,
// with where the token belongs, and nothing is overwritten.
func TestBootstrapLockedOut(t *testing.T) {
	store := &fakeStore{}
	sys := &fakeACL{store: store, mgmt: "someone else's"}
	_, _, err := bootstrap(sys).Run(context.Background(), store, &reconcile.Plan{Apply: true})
	if !errors.Is(err, errLocked) || !strings.Contains(err.Error(), "/secrets/mgmt") {
		t.Fatalf("err = %v, want locked out naming the secret", err)
	}
	if sys.mgmt != "someone else's" {
		t.Error("the system's token changed")
	}
}

func node(name string, roles ...string) inventory.Node {
	return inventory.Node{Name: name, Roles: roles, PrivateIP: "10.0.0." + name[len(name)-1:]}
}

func TestAgents(t *testing.T) {
	nodes := []inventory.Node{node("s1", inventory.RoleServer), node("s2", inventory.RoleServer), node("c3", inventory.RoleClient)}
	down := map[string]bool{"s1": true}
	svc := Service{Name: "toy", Leader: func(_ context.Context, n inventory.Node) (string, error) {
		if down[n.Name] {
			return "", errors.New("connection refused")
		}
		return "10.0.0.2:4647", nil
	}}
	as := svc.Probe(context.Background(), nodes)
	if got := as.Down(); !slices.Equal(got, []string{"s1"}) {
		t.Errorf("Down = %v", got)
	}
	if as.Leader() != "10.0.0.2:4647" || as.IsUp("s1") || !as.IsUp("c3") {
		t.Errorf("leader %q, s1 up %v, c3 up %v", as.Leader(), as.IsUp("s1"), as.IsUp("c3"))
	}
	if s := as.Server(); s.Name != "s2" {
		t.Errorf("Server = %s, want the first server that answers", s.Name)
	}
	if l := svc.Status(as[1], as.Leader()); l.State != "server, leader" || !l.Healthy {
		t.Errorf("s2: %+v", l)
	}
	if l := svc.Status(as[0], as.Leader()); l.State != "down" || l.Healthy {
		t.Errorf("s1: %+v", l)
	}

	// Installing is planned once for the changed inputs and the node that
	// is down; applying runs the play once, on those nodes.
	var runs [][]string
	var starts []bool
	run := func(hosts []string, startOnly bool) error {
		runs, starts = append(runs, hosts), append(starts, startOnly)
		return nil
	}
	all := map[string]string{}
	for _, n := range nodes {
		all[n.Name] = "inputs changed"
	}
	p := &reconcile.Plan{}
	if err := svc.Converge(p, all, as, run); err != nil || len(p.Changes) != 2 || len(runs) != 0 {
		t.Errorf("plan: err %v, changes %v, runs %v", err, p.Changes, runs)
	}
	if len(p.Changes) > 0 && p.Changes[0].Target != "toy on every node" {
		t.Errorf("every node pending: %v, want one change for every node", p.Changes[0])
	}
	p = &reconcile.Plan{Apply: true}
	if err := svc.Converge(p, all, as, run); err != nil || len(runs) != 1 || len(runs[0]) != len(nodes) || starts[0] {
		t.Errorf("apply: err %v, runs %v, start only %v", err, runs, starts)
	}
	// Only the dead agent: it is started, on its node alone.
	runs, starts = nil, nil
	p = &reconcile.Plan{Apply: true}
	if err := svc.Converge(p, nil, as, run); err != nil || len(p.Changes) != 1 || len(runs) != 1 || !slices.Equal(runs[0], []string{"s1"}) || !starts[0] {
		t.Errorf("dead agent: err %v, changes %v, runs %v, start only %v", err, p.Changes, runs, starts)
	}
	// A new node and the dead agent: one change each, one run of the whole
	// play on both.
	runs, starts = nil, nil
	p = &reconcile.Plan{Apply: true}
	if err := svc.Converge(p, map[string]string{"c3": "new node"}, as, run); err != nil || len(p.Changes) != 2 ||
		len(runs) != 1 || !slices.Equal(runs[0], []string{"c3", "s1"}) || starts[0] {
		t.Errorf("new node: err %v, changes %v, runs %v, start only %v", err, p.Changes, runs, starts)
	}
	if len(p.Changes) > 0 && (p.Changes[0].Target != "toy on c3" || p.Changes[0].Detail != "new node") {
		t.Errorf("new node: first change %+v", p.Changes[0])
	}
	// A setting of the servers alone: one change for them.
	p = &reconcile.Plan{}
	if err := svc.Converge(p, map[string]string{"s1": "inputs changed", "s2": "inputs changed"}, as, run); err != nil ||
		len(p.Changes) != 2 || p.Changes[0].Target != "toy on the servers" || p.Changes[0].Detail != "inputs changed" {
		t.Errorf("the servers' setting: err %v, changes %+v", err, p.Changes)
	}

	down["s1"] = false
	inv := &inventory.Inventory{Nodes: nodes}
	as, err := svc.WaitLeader(context.Background(), inv)
	if err != nil || len(as.Down()) != 0 {
		t.Errorf("WaitLeader: %v, down %v", err, as.Down())
	}
}

type outputs map[string]string

func (o outputs) Output(k string) string      { return o[k] }
func (o outputs) SetOutput(k, v string) error { o[k] = v; return nil }

func TestRecordOutputs(t *testing.T) {
	o := outputs{"a": "1"}
	want := map[string]string{"a": "1", "b": "2"}
	p := &reconcile.Plan{}
	if err := RecordOutputs(p, o, want); err != nil || len(p.Changes) != 1 || len(o) != 1 {
		t.Fatalf("plan: err %v, changes %v, outputs %v", err, p.Changes, o)
	}
	p.Apply = true
	p.Changes = nil
	if err := RecordOutputs(p, o, want); err != nil || o["b"] != "2" {
		t.Fatalf("apply: err %v, outputs %v", err, o)
	}
}

func TestLeaderChanging(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errors.New("Unexpected response code: 500 (failed to restore from snapshot: Raft error when restoring snapshot: leadership lost while committing log)"), true},
		{fmt.Errorf("restore: %w", errors.New("Unexpected response code: 500 (No cluster leader)")), true},
		{errors.New("Unexpected response code: 500 (rpc error: node is not the leader)"), true},
		{errors.New("Unexpected response code: 403 (Permission denied)"), false},
		{errors.New("failed to restore from snapshot: snapshot is corrupt"), false},
		{nil, false},
	} {
		if got := LeaderChanging(tc.err); got != tc.want {
			t.Errorf("LeaderChanging(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestForwardBroken(t *testing.T) {
	for _, tc := range []struct {
		err  string
		want bool
	}{
		{"Unexpected response code: 500 (failed to decode response: read tcp 10.213.202.10:52889->10.213.202.12:8300: read: connection reset by peer)", true},
		{"Unexpected response code: 500 (rpc error: EOF)", true},
		{"Unexpected response code: 500 (rpc error making call: EOF)", true},
		{"Unexpected response code: 403 (Permission denied)", false},
		{"Unexpected response code: 500 (snapshot is corrupt)", false},
	} {
		if got := ForwardBroken(errors.New(tc.err)); got != tc.want {
			t.Errorf("ForwardBroken(%q) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// A restore that the leadership moved under is sent again, whole: the HTTP
// client closed the first attempt's file, which cannot be rewound.
func TestRestoreSnapshotRetriesWithTheWholeFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "nomad.snap")
	if err := os.WriteFile(file, []byte("snapshot bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := RestoreSnapshot(context.Background(), file, func(r io.Reader) error {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		got = append(got, string(b))
		if c, ok := r.(io.Closer); ok {
			c.Close() // as net/http does with a request's body
		}
		if len(got) == 1 {
			return errors.New("failed to restore from snapshot: Raft error when restoring snapshot: leadership lost while committing log")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1] != "snapshot bytes" {
		t.Errorf("attempts sent %q, want the whole file twice", got)
	}
}

// What the start play starts beside an agent (node-exporter on the Nomad
// servers) is started when it does not run, on its node alone, and
// WaitLeader waits for it.
func TestBeside(t *testing.T) {
	nodes := []inventory.Node{node("s1", inventory.RoleServer), node("s2", inventory.RoleServer), node("c3", inventory.RoleClient)}
	var mu sync.Mutex
	missing := map[string]bool{"s2": true}
	svc := Service{Name: "toy",
		Leader: func(context.Context, inventory.Node) (string, error) { return "10.0.0.1:4647", nil },
		Beside: func(_ context.Context, n inventory.Node) string {
			mu.Lock()
			defer mu.Unlock()
			if missing[n.Name] {
				return "side"
			}
			return ""
		}}
	as := svc.Probe(context.Background(), nodes)
	if len(as.Down()) != 0 || as.Leader() == "" {
		t.Errorf("down %v, leader %q: an agent with something missing beside it still answers", as.Down(), as.Leader())
	}
	if l := svc.Status(as[1], as.Leader()); l.Healthy || l.Detail != "side not running" {
		t.Errorf("status of s2: %+v", l)
	}
	var runs [][]string
	var starts []bool
	run := func(hosts []string, startOnly bool) error {
		runs, starts = append(runs, hosts), append(starts, startOnly)
		return nil
	}
	p := &reconcile.Plan{Apply: true}
	if err := svc.Converge(p, nil, as, run); err != nil || len(p.Changes) != 1 || len(runs) != 1 || !slices.Equal(runs[0], []string{"s2"}) || !starts[0] {
		t.Fatalf("err %v, changes %v, runs %v, start only %v", err, p.Changes, runs, starts)
	}
	if c := p.Changes[0]; c.Target != "side on s2" || c.Detail != "not running" {
		t.Errorf("change %+v, want start side on s2", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := svc.WaitLeader(ctx, &inventory.Inventory{Nodes: nodes}); err == nil {
		t.Errorf("WaitLeader with side missing on s2: %v", err)
	}
	mu.Lock()
	missing["s2"] = false
	mu.Unlock()
	if _, err := svc.WaitLeader(context.Background(), &inventory.Inventory{Nodes: nodes}); err != nil {
		t.Errorf("WaitLeader: %v", err)
	}
}
