package nomad

import (
	"context"
	"fmt"
	"strings"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// managementName is the name of a management token a rotation made (the
// first one is ACL bootstrap's).
const managementName = "bootstrap: management"

const rotateDetail = "rotation: the old token is retired, and deleted once the platform jobs use the new one"

// rotateTokens begins the token rotations that `bootstrap rotate tokens`
// asked for (see stages.RetiredTokenPrefix) and returns the management
// token to carry on with. Nomad chooses token secrets, so a client token's
// rotation only retires the old token here: the normal token convergence
// then makes the new one and stores its secret, and the stage ends it
// (Env.EndTokenRotation).
func rotateTokens(ctx context.Context, e *stages.Env, c *nomadapi.Client, p *reconcile.Plan, mgmt string) (string, error) {
	q := (&nomadapi.QueryOptions{}).WithContext(ctx)
	mgmt, err := rotateManagement(ctx, e, c, p, mgmt)
	if err != nil {
		return "", err
	}
	var have map[string]*nomadapi.ACLTokenListStub
	for _, t := range tokens(e.Config) {
		mark := e.Note(stages.RotateTokenNote(t.name))
		if mark == "" {
			continue
		}
		if have == nil {
			if have, err = listTokens(c, q); err != nil {
				return "", err
			}
		}
		err := p.Do(reconcile.Replace, "nomad token "+t.name, rotateDetail, func() error {
			if mark == stages.RotateRequested {
				h, ok := have[t.displayName()]
				if !ok {
					// Nothing to replace: the token is made as usual.
					return e.DeleteNotes(stages.RotateTokenNote(t.name))
				}
				mark = h.AccessorID
				if err := e.SetNote(stages.RotateTokenNote(t.name), mark); err != nil {
					return err
				}
			}
			if err := retire(ctx, c, mark, t.name); err != nil {
				return err
			}
			crashpoint.Hit("nomad:rotate-after-retire")
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("nomad: %w", err)
		}
	}
	return mgmt, nil
}

// rotateManagement replaces the management token: the old one is retired,
// a new one made (found again by its name after a kill) and its secret
// stored. The old one works until the jobs stage deletes it, so the stored
// token works at every moment.
func rotateManagement(ctx context.Context, e *stages.Env, c *nomadapi.Client, p *reconcile.Plan, mgmt string) (string, error) {
	const name = "management"
	mark := e.Note(stages.RotateTokenNote(name))
	if mark == "" {
		return mgmt, nil
	}
	err := p.Do(reconcile.Replace, "nomad token "+name, rotateDetail, func() error {
		q := (&nomadapi.QueryOptions{}).WithContext(ctx)
		w := (&nomadapi.WriteOptions{}).WithContext(ctx)
		if mark == stages.RotateRequested {
			self, _, err := c.ACLTokens().Self(q)
			if err != nil {
				return fmt.Errorf("read the management token: %w", err)
			}
			mark = self.AccessorID
			if err := e.SetNote(stages.RotateTokenNote(name), mark); err != nil {
				return err
			}
		}
		// Retired first: the new token is then the only one with its name.
		if err := retire(ctx, c, mark, name); err != nil {
			return err
		}
		have, err := listTokens(c, q)
		if err != nil {
			return err
		}
		var secret string
		if h, ok := have[managementName]; ok {
			full, _, err := c.ACLTokens().Info(h.AccessorID, q)
			if err != nil {
				return fmt.Errorf("read the new management token: %w", err)
			}
			secret = full.SecretID
		} else {
			created, _, err := c.ACLTokens().Create(&nomadapi.ACLToken{Name: managementName, Type: "management", Global: true}, w)
			if err != nil {
				return fmt.Errorf("create the new management token: %w", err)
			}
			crashpoint.Hit("nomad:rotate-after-create")
			secret = created.SecretID
		}
		if err := e.Secrets.Put(stages.SecretNomadBootstrapToken, secret); err != nil {
			return err
		}
		mgmt = secret
		return e.DeleteNotes(stages.RotateTokenNote(name))
	})
	if err != nil {
		return "", fmt.Errorf("nomad: %w", err)
	}
	return mgmt, nil
}

// retire renames the token with accessor id to stages.RetiredTokenPrefix +
// name; one that is gone already is fine.
func retire(ctx context.Context, c *nomadapi.Client, id, name string) error {
	tok, _, err := c.ACLTokens().Info(id, (&nomadapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		if strings.Contains(err.Error(), "404") {
			return nil
		}
		return fmt.Errorf("read token %s: %w", id, err)
	}
	if want := stages.RetiredTokenPrefix + name; tok.Name != want {
		tok.Name = want
		if _, _, err := c.ACLTokens().Update(tok, (&nomadapi.WriteOptions{}).WithContext(ctx)); err != nil {
			return fmt.Errorf("retire token %s: %w", name, err)
		}
	}
	return nil
}
