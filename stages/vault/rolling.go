package vault

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/platform-bootstrap/bootstrap/ansible"
	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// A running HA Vault whose nodes must restart (a new binary, a new
// configuration, new TLS files) restarts one node at a time: the standbys
// first, then the active node once it has handed over (sys/step-down).
// Each node runs the play alone, is unsealed with the stored shares and
// must be a healthy raft member again (Autopilot) before the next goes,
// so the cluster keeps its quorum and an active node throughout.

const rollingDetail = "one node at a time: the standbys first, the active node last after stepping down; each unsealed and healthy in raft before the next"

// rollable reports whether the nodes can restart one at a time: more than
// one, all answering and initialised, with shares bootstrap can submit
// itself (a node a killed run left sealed is unsealed first). Otherwise
// they converge together, as on a first run.
func rollable(hs []nodeHealth, init *InitData) bool {
	if len(hs) < 2 || init == nil || init.PGPEncrypted {
		return false
	}
	for _, h := range hs {
		if !h.up() || !h.health.Initialized {
			return false
		}
	}
	return true
}

// roll restarts the nodes of hs that want it one at a time (see
// restartOne), after unsealing any node a killed run left sealed.
func (s *Stage) roll(ctx context.Context, e *stages.Env, p *reconcile.Plan, inv *inventory.Inventory, nodes []inventory.Node, hs []nodeHealth, init *InitData, pending map[string]string, all bool) error {
	for _, h := range hs {
		if h.health.Sealed {
			if err := p.Do(reconcile.Unseal, "vault on "+h.node.Name, "", func() error { return unseal(ctx, h, init) }); err != nil {
				return err
			}
		}
	}
	if p.Apply {
		hs = probe(ctx, e, nodes) // who is active now
		for _, h := range hs {
			if !h.up() {
				return fmt.Errorf("vault on %s does not answer before its rolling restart: %w; see %s", h.node.Name, h.err, logHint(h.node))
			}
		}
	}
	for _, h := range rollOrder(hs, pending, all) {
		why := pending[h.node.Name]
		if why == "" {
			why = "new TLS files"
		}
		err := p.Do(reconcile.Install, "vault on "+h.node.Name, why+"; "+rollingDetail, func() error {
			return s.restartOne(ctx, e, inv, nodes, h, init)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// rollOrder returns the nodes of hs that want a restart (pending, or all
// of them when every node does), the standbys first and the active node
// last.
func rollOrder(hs []nodeHealth, pending map[string]string, all bool) []nodeHealth {
	var out []nodeHealth
	for _, h := range hs {
		if _, ok := pending[h.node.Name]; ok || all {
			out = append(out, h)
		}
	}
	slices.SortStableFunc(out, func(a, b nodeHealth) int {
		switch {
		case a.health.Standby == b.health.Standby:
			return 0
		case a.health.Standby:
			return -1
		}
		return 1
	})
	return out
}

// restartOne converges node h alone: the play restarts its Vault (new
// binary or configuration), which is then unsealed and must be a healthy
// raft member before this returns.
func (s *Stage) restartOne(ctx context.Context, e *stages.Env, inv *inventory.Inventory, nodes []inventory.Node, h nodeHealth, init *InitData) error {
	tok, err := pki.Token(ctx, e, h.client)
	if err != nil {
		return err
	}
	if !h.health.Standby {
		e.Step("vault on %s hands its active role over", h.node.Name)
		c, err := h.client.Clone()
		if err != nil {
			return err
		}
		c.SetToken(tok)
		if err := c.Sys().StepDownWithContext(ctx); err != nil {
			return fmt.Errorf("vault on %s: step down: %w", h.node.Name, err)
		}
		err = poll.Until(ctx, time.Minute, 300*time.Millisecond, func() (bool, error) {
			for _, o := range probe(ctx, e, nodes) {
				if o.node.Name != h.node.Name && o.up() && !o.health.Sealed && !o.health.Standby {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("vault: no other node became active after %s stepped down: %w", h.node.Name, err)
		}
	}
	if err := ansible.Converge(ctx, e, inv, s.play(e, nodes), []string{h.node.Name}); err != nil {
		return err
	}
	crashpoint.Hit("vault:after-node-restart")
	hs, err := waitUp(ctx, e, []inventory.Node{h.node})
	if err != nil {
		return err
	}
	if hs[0].health.Sealed {
		e.Step("unsealing vault on %s", h.node.Name)
		if err := unseal(ctx, hs[0], init); err != nil {
			return err
		}
	}
	// Healthy in Autopilot's eyes: in contact with the active node, on its
	// term and caught up with its log.
	var last string
	err = poll.Until(ctx, 2*time.Minute, 500*time.Millisecond, func() (bool, error) {
		for _, o := range probe(ctx, e, nodes) {
			if !o.up() || o.health.Sealed {
				continue
			}
			c, err := o.client.Clone()
			if err != nil {
				return false, err
			}
			c.SetToken(tok)
			st, err := c.Sys().RaftAutopilotStateWithContext(ctx)
			if err != nil || st == nil {
				last = fmt.Sprint(err)
				continue
			}
			for _, srv := range st.Servers {
				if srv.Name == h.node.Name {
					last = fmt.Sprintf("autopilot: %s healthy %v, status %s", srv.Name, srv.Healthy, srv.Status)
					return srv.Healthy, nil
				}
			}
			last = "autopilot does not list " + h.node.Name
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("vault on %s is not a healthy raft member after its restart (%s); see %s: %w", h.node.Name, last, logHint(h.node), err)
	}
	return nil
}
