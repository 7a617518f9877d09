package consul

import (
	"context"
	"fmt"
	"strings"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// globalManagement is the ID of Consul's built-in global-management policy.
const globalManagement = "00000000-0000-0000-0000-000000000001"

const rotateDetail = "rotation: the old token is retired, and deleted once the platform jobs use the new one"

// rotateTokens begins the token rotations that `bootstrap rotate tokens`
// asked for (see stages.RetiredTokenPrefix), and returns the management
// token to carry on with. A token's old secret keeps working until the jobs
// stage deletes it; the normal token convergence then makes the new one
// with the new secret stored here, and the stage ends it (Env.EndTokenRotation).
func rotateTokens(ctx context.Context, e *stages.Env, c *consulapi.Client, p *reconcile.Plan, inv *inventory.Inventory, mgmt string) (string, error) {
	mgmt, err := rotateManagement(ctx, e, c, p, mgmt)
	if err != nil {
		return "", err
	}
	var toks map[string]*consulapi.ACLTokenListEntry
	for _, t := range wantTokens(e.Config, inv) {
		mark := e.Note(stages.RotateTokenNote(t.name))
		if mark == "" {
			continue
		}
		if toks == nil {
			if toks, err = readTokens(c, (&consulapi.QueryOptions{}).WithContext(ctx)); err != nil {
				return "", err
			}
		}
		err := p.Do(reconcile.Replace, "consul token "+t.name, rotateDetail, func() error {
			if mark == stages.RotateRequested {
				h, ok := toks[t.description()]
				if !ok {
					// Nothing to replace: the token is made as usual.
					return e.DeleteNotes(stages.RotateTokenNote(t.name))
				}
				mark = h.AccessorID
				if err := e.SetNote(stages.RotateTokenNote(t.name), mark); err != nil {
					return err
				}
			}
			old, err := retire(ctx, c, mark, t.name)
			if err != nil {
				return err
			}
			crashpoint.Hit("consul:rotate-after-retire")
			// A new secret, unless this was done before a kill.
			if stored, _, err := e.Secrets.Get(t.secretName()); err != nil {
				return err
			} else if old != nil && stored == old.SecretID {
				s, err := secrets.NewUUID()
				if err != nil {
					return err
				}
				return e.Secrets.Put(t.secretName(), s)
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("consul: %w", err)
		}
	}
	return mgmt, nil
}

// rotateManagement replaces the management token. The stored one must work
// at every moment (every run starts by checking it), so the new secret is
// kept aside, the token made with it, the old one retired, and only then is
// the new secret stored as the management token.
func rotateManagement(ctx context.Context, e *stages.Env, c *consulapi.Client, p *reconcile.Plan, mgmt string) (string, error) {
	const name = "management"
	next := stages.SecretConsulBootstrapToken + ".next"
	mark := e.Note(stages.RotateTokenNote(name))
	if mark == "" {
		// A run killed after the rotation ended may leave the spare secret.
		if _, ok, err := e.Secrets.Get(next); err != nil || !ok {
			return mgmt, err
		}
		return mgmt, p.Do(reconcile.Delete, "secret "+next, "left by a finished rotation", func() error { return e.Secrets.Delete(next) })
	}
	err := p.Do(reconcile.Replace, "consul token "+name, rotateDetail, func() error {
		q := (&consulapi.QueryOptions{}).WithContext(ctx)
		if mark == stages.RotateRequested {
			self, _, err := c.ACL().TokenReadSelf(q)
			if err != nil {
				return fmt.Errorf("read the management token: %w", err)
			}
			mark = self.AccessorID
			if err := e.SetNote(stages.RotateTokenNote(name), mark); err != nil {
				return err
			}
		}
		s, _, err := e.Secrets.GetOrCreate(next, secrets.NewUUID)
		if err != nil {
			return err
		}
		if s != mgmt {
			if err := ensureManagement(ctx, c, s); err != nil {
				return err
			}
			crashpoint.Hit("consul:rotate-after-create")
			if _, err := retire(ctx, c, mark, name); err != nil {
				return err
			}
			if err := e.Secrets.Put(stages.SecretConsulBootstrapToken, s); err != nil {
				return err
			}
			mgmt = s
		}
		// The note goes before the spare secret: a run killed in between
		// finds no rotation and deletes the spare (not a new rotation
		// that would make another token with it).
		if err := e.DeleteNotes(stages.RotateTokenNote(name)); err != nil {
			return err
		}
		return e.Secrets.Delete(next)
	})
	if err != nil {
		return "", fmt.Errorf("consul: %w", err)
	}
	return mgmt, nil
}

// ensureManagement makes a management token with secret s unless it exists.
func ensureManagement(ctx context.Context, c *consulapi.Client, s string) error {
	list, _, err := c.ACL().TokenList((&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("list tokens: %w", err)
	}
	for _, t := range list {
		if t.SecretID == s {
			return nil
		}
	}
	_, _, err = c.ACL().TokenCreate(&consulapi.ACLToken{
		Description: "bootstrap: management",
		SecretID:    s,
		Policies:    []*consulapi.ACLTokenPolicyLink{{ID: globalManagement}},
	}, (&consulapi.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("create the new management token: %w", err)
	}
	return nil
}

// retire renames the token with accessor id to stages.RetiredTokenPrefix +
// name, and returns it (nil when it is gone already).
func retire(ctx context.Context, c *consulapi.Client, id, name string) (*consulapi.ACLToken, error) {
	tok, _, err := c.ACL().TokenRead(id, (&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		if strings.Contains(err.Error(), "ACL not found") || strings.Contains(err.Error(), "404") {
			return nil, nil
		}
		return nil, fmt.Errorf("read token %s: %w", id, err)
	}
	if tok == nil {
		return nil, nil
	}
	if want := stages.RetiredTokenPrefix + name; tok.Description != want {
		tok.Description = want
		if _, _, err := c.ACL().TokenUpdate(tok, (&consulapi.WriteOptions{}).WithContext(ctx)); err != nil {
			return nil, fmt.Errorf("retire token %s: %w", name, err)
		}
	}
	return tok, nil
}
