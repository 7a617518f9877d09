package pki

import (
	"context"
	"testing"
)

// BenchmarkConvergedRun measures what every `bootstrap up` pays for this
// stage once the PKI exists: the token check, a plan that finds nothing and
// writes nothing (the MobileID layout: 8 CA mounts, 10 roles).
func BenchmarkConvergedRun(b *testing.B) {
	h := newHarness(b, mobileID)
	h.apply()
	spec := h.spec()
	ctx := context.Background()
	for b.Loop() {
		c := h.client()
		res, err := Plan(ctx, c, h.env, spec)
		if err != nil || len(res.Changes) > 0 {
			b.Fatalf("plan: %v %v", res.Changes, err)
		}
	}
}
