package cluster

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages/stagestest"
)

// fakeRing records the keyring calls.
type fakeRing struct {
	alive []string
	keys  []string
	calls []string
}

func (r *fakeRing) Keys(context.Context) ([]string, error)  { return slices.Clone(r.keys), nil }
func (r *fakeRing) Alive(context.Context) ([]string, error) { return r.alive, nil }
func (r *fakeRing) Install(_ context.Context, k string) error {
	r.calls = append(r.calls, "install")
	r.keys = append(r.keys, k)
	return nil
}
func (r *fakeRing) Use(context.Context, string) error {
	r.calls = append(r.calls, "use")
	return nil
}
func (r *fakeRing) Remove(_ context.Context, k string) error {
	r.calls = append(r.calls, "remove")
	r.keys = slices.DeleteFunc(r.keys, func(x string) bool { return x == k })
	return nil
}

func TestRotateGossipRefusesWithAMemberDown(t *testing.T) {
	e := stagestest.Env(t, ".", t.TempDir(), "provider \"local\" {}\n", nil)
	nodes := []inventory.Node{{Name: "server-1"}, {Name: "server-2"}, {Name: "client-1"}}
	ring := &fakeRing{alive: []string{"server-1", "client-1"}, keys: []string{"old"}}
	err := RotateGossip(context.Background(), e, "consul", "consul/gossip", ring, nodes)
	if err == nil || !strings.Contains(err.Error(), "server-2 not alive") {
		t.Fatalf("err = %v, want server-2 named as not alive", err)
	}
	if len(ring.calls) != 0 {
		t.Errorf("the keyring was changed: %v", ring.calls)
	}
	if _, ok, _ := e.Secrets.Get("consul/gossip.next"); ok {
		t.Error("a new key was stored although nothing was rotated")
	}

	ring.alive = append(ring.alive, "server-2")
	if err := RotateGossip(context.Background(), e, "consul", "consul/gossip", ring, nodes); err != nil {
		t.Fatal(err)
	}
	key, _, _ := e.Secrets.Get("consul/gossip")
	if want := []string{"install", "use", "remove"}; !slices.Equal(ring.calls, want) || !slices.Equal(ring.keys, []string{key}) {
		t.Errorf("calls %v, keys %v: want %v and only the stored key", ring.calls, ring.keys, want)
	}
}
