// Package stages is the engine that brings a platform up in order: each
// stage finds what exists, compares it with the configuration, and changes
// only the difference. The runner persists progress after every stage, holds
// a lock on the state directory, and resumes where a killed run stopped.
package stages

import (
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"slices"

	"context"
	"errors"
	"fmt"
	"strings"
)

// Stage is one step of bringing the platform up.
type Stage interface {
	Name() string
	// Plan asks the live system what Apply would change. It must not write
	// anything. An empty plan means the stage is converged.
	Plan(ctx context.Context, e *Env) ([]Change, error)
	// Apply makes the changes. It must be safe to run again after being
	// interrupted at any point.
	Apply(ctx context.Context, e *Env) error
}

// Destroyer is implemented by stages that undo their work on `down`.
// Stages are destroyed in reverse order.
type Destroyer interface {
	Destroy(ctx context.Context, e *Env) error
}

// Statuser is implemented by stages that can describe the live system for
// `status`.
type Statuser interface {
	Status(ctx context.Context, e *Env) ([]StatusLine, error)
}

// StatusLine is one row of `bootstrap status`.
type StatusLine struct {
	Component string `json:"component"`
	Node      string `json:"node,omitempty"`
	State     string `json:"state"`
	Detail    string `json:"detail,omitempty"`
	Healthy   bool   `json:"healthy"`
}

// Change is one difference between the configuration and the live system.
type Change = reconcile.Change

// ErrNotReady is returned by Plan when the stage depends on an earlier stage
// that has not been applied yet, so the live system cannot be asked.
var ErrNotReady = errors.New("depends on earlier stages; planned once they are applied")

// NotReadyf wraps ErrNotReady with the reason.
func NotReadyf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotReady, fmt.Sprintf(format, args...))
}

// Selection picks the stages of a run from the --only, --from and --skip flags.
type Selection struct {
	Only []string
	From string
	Skip []string
}

// UsageError is a mistake on the command line; it maps to exit code 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Validate checks every named stage is one of all.
func (s Selection) Validate(all []Stage) error {
	var names []string
	for _, st := range all {
		names = append(names, st.Name())
	}
	check := func(flag, name string) error {
		if slices.Contains(names, name) {
			return nil
		}
		return &UsageError{Msg: fmt.Sprintf("%s: unknown stage %q; stages are %s", flag, name, strings.Join(names, ", "))}
	}
	for _, n := range s.Only {
		if err := check("--only", n); err != nil {
			return err
		}
	}
	for _, n := range s.Skip {
		if err := check("--skip", n); err != nil {
			return err
		}
	}
	if s.From != "" {
		if err := check("--from", s.From); err != nil {
			return err
		}
	}
	if len(s.Only) > 0 && s.From != "" {
		return &UsageError{Msg: "--only and --from cannot be combined; use --only with the full list"}
	}
	return nil
}

// Pick returns the selected stages, in order.
func (s Selection) Pick(all []Stage) []Stage {
	in := func(list []string, n string) bool {
		for _, x := range list {
			if x == n {
				return true
			}
		}
		return false
	}
	var out []Stage
	started := s.From == ""
	for _, st := range all {
		if st.Name() == s.From {
			started = true
		}
		if !started || in(s.Skip, st.Name()) || (len(s.Only) > 0 && !in(s.Only, st.Name())) {
			continue
		}
		out = append(out, st)
	}
	return out
}
