package pki

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Result is what a Plan found or an Apply did.
type Result struct {
	Changes []stages.Change
	// Warnings are differences bootstrap will not fix on its own, such as a
	// root CA whose subject no longer matches the configuration: replacing a
	// CA would invalidate every certificate it issued.
	Warnings []string
}

// Plan asks Vault what Apply would change. It writes nothing.
func Plan(ctx context.Context, c *api.Client, e *stages.Env, s Spec) (Result, error) {
	r := &reconciler{c: c, e: e, spec: s}
	err := r.run(ctx)
	return Result{Changes: r.plan.Changes, Warnings: r.warnings}, err
}

// Apply makes Vault match s and returns what it changed. It may be killed at
// any point; running it again finishes the work without creating a second CA.
func Apply(ctx context.Context, c *api.Client, e *stages.Env, s Spec) (Result, error) {
	r := &reconciler{c: c, e: e, spec: s, plan: reconcile.Plan{Apply: true}}
	err := r.run(ctx)
	return Result{Changes: r.plan.Changes, Warnings: r.warnings}, err
}

// reconciler runs the same find → compare → change steps for Plan and
// Apply, so the two can never disagree about what needs doing.
type reconciler struct {
	c        *api.Client
	e        *stages.Env
	spec     Spec
	plan     reconcile.Plan
	warnings []string

	mounts map[string]*api.MountOutput
	auths  map[string]*api.AuthMount
	// certs holds the PEM certificate of each CA mount's issuer, once known.
	certs map[string]string
}

// change records a difference and, when applying, fixes it with do.
func (r *reconciler) change(action reconcile.Action, target, detail string, do func() error) error {
	return r.plan.Do(action, target, detail, do)
}

// planned records a change that an earlier planned change makes necessary,
// while planning only: Apply finds and fixes it in its own step.
func (r *reconciler) planned(action reconcile.Action, target, detail string) {
	r.plan.Changes = append(r.plan.Changes, stages.Change{Action: action, Target: target, Detail: detail})
}

func (r *reconciler) warnf(format string, args ...any) {
	r.warnings = append(r.warnings, fmt.Sprintf(format, args...))
}

func (r *reconciler) run(ctx context.Context) error {
	r.certs = map[string]string{}
	if err := r.readMounts(ctx); err != nil {
		return err
	}
	steps := []func(context.Context) error{
		r.authMounts,
		r.kvMount,
		r.policies,
		r.cas,
		r.caFiles,
		r.consulTemplateTokens,
		r.appRoles,
		r.adminUser,
		r.rootToken,
	}
	for _, step := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (r *reconciler) readMounts(ctx context.Context) error {
	m, err := r.c.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list vault secret engines: %w", err)
	}
	r.mounts = m
	a, err := r.c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list vault auth methods: %w", err)
	}
	r.auths = a
	return nil
}

// mounted reports whether the secret engine at path exists (or, in a plan,
// whether it existed before this run).
func (r *reconciler) mounted(path string) bool {
	_, ok := r.mounts[path+"/"]
	return ok
}

func (r *reconciler) authMounted(path string) bool {
	_, ok := r.auths[path+"/"]
	return ok
}

// isNotFound reports a 404 from Vault.
func isNotFound(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 404
}

// isDenied reports a 403: the token is invalid or lacks the capability.
func isDenied(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 403
}

// hasError reports whether Vault answered with an error containing msg.
func hasError(err error, msg string) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, msg) {
			return true
		}
	}
	return false
}
