package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
)

// ACL is a cluster's ACL system, seen through a client that carries one
// token.
type ACL interface {
	// Self reads the client's own token.
	Self(ctx context.Context) error
	// Bootstrap bootstraps the ACL system with the client's token as the
	// management token.
	Bootstrap(ctx context.Context) error
}

// Store keeps the management token (secrets.Store).
type Store interface {
	Get(name string) (string, bool, error)
	GetOrCreate(name string, gen func() (string, error)) (string, bool, error)
	Path(name string) string
}

// Bootstrap describes the crash-safe ACL bootstrap of one service.
type Bootstrap struct {
	Name   string // "consul": target "consul ACLs", crash points "consul:before-acl-bootstrap"
	Secret string // the secret that keeps the management token
	// Client returns the ACL system seen with token.
	Client func(token string) (ACL, error)
	// Denied reports whether err refuses the token; Done whether it says
	// the ACL system was bootstrapped already.
	Denied, Done func(error) bool
	// LockedOut is returned, with how to get back in (ResetURL), when the
	// system was bootstrapped with a token that is not the stored one.
	LockedOut error
	ResetURL  string
}

// Run makes sure the ACL system is bootstrapped with the stored management
// token and returns it. The token's secret is generated and stored before
// the bootstrap, never after (consul-k8s' hole: a bootstrap succeeded, its
// token was never saved, and the cluster was locked out for good), so a run
// killed anywhere is finished by the next. While planning it only reads:
// ok is false when the bootstrap is still to come, and what depends on it
// cannot be read yet.
func (b Bootstrap) Run(ctx context.Context, store Store, p *reconcile.Plan) (mgmt string, ok bool, err error) {
	mgmt, stored, err := store.Get(b.Secret)
	if err != nil {
		return "", false, err
	}
	if stored {
		acl, err := b.Client(mgmt)
		if err != nil {
			return "", false, err
		}
		err = b.check(ctx, acl)
		if err == nil {
			return mgmt, true, nil
		}
		if !b.Denied(err) {
			return "", false, fmt.Errorf("%s: check the bootstrap token: %w", b.Name, err)
		}
		// Stored but refused: a run stopped between storing the secret
		// and bootstrapping.
	}
	if !p.Apply {
		p.Planned(reconcile.Bootstrap, b.Name+" ACLs", "token generated and stored first")
		return "", false, nil
	}
	mgmt, _, err = store.GetOrCreate(b.Secret, secrets.NewUUID)
	if err != nil {
		return "", false, err
	}
	acl, err := b.Client(mgmt)
	if err != nil {
		return "", false, err
	}
	crashpoint.Hit(b.Name + ":before-acl-bootstrap")
	if err := p.Do(reconcile.Bootstrap, b.Name+" ACLs", "token generated and stored first", func() error {
		return b.bootstrap(ctx, acl, store)
	}); err != nil {
		return "", false, err
	}
	crashpoint.Hit(b.Name + ":after-acl-bootstrap")
	return mgmt, true, nil
}

func (b Bootstrap) bootstrap(ctx context.Context, acl ACL, store Store) error {
	// Right after a leader election the ACL system may not be ready yet.
	err := poll.Retry(ctx, time.Minute, time.Second, func() error { return acl.Bootstrap(ctx) }, b.Done)
	if err == nil || !b.Done(err) {
		return err
	}
	if b.check(ctx, acl) != nil {
		return fmt.Errorf("%w: the stored token %s is not valid; reset the bootstrap (%s) and put the new management token there", b.LockedOut, store.Path(b.Secret), b.ResetURL)
	}
	return nil // bootstrapped by an earlier run that stopped before using the token
}

// check reads the token itself. Errors other than a refusal (no leader
// yet, a server that just died) are retried while the cluster elects one.
func (b Bootstrap) check(ctx context.Context, acl ACL) error {
	return poll.Retry(ctx, 45*time.Second, time.Second, func() error { return acl.Self(ctx) }, b.Denied)
}
