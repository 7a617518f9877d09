package stages_test

import (
	"context"
	"testing"

	"github.com/platform-bootstrap/bootstrap/stages"
)

// BenchmarkConvergedUp measures the engine's own cost of an `up` that has
// nothing to do: eight converged stages planned once each, no state write.
func BenchmarkConvergedUp(b *testing.B) {
	dir := b.TempDir()
	var toys []*toy
	for _, n := range []string{"keys", "provision", "vault", "pki", "consul", "nomad", "jobs", "verify"} {
		t := newToy(n)
		t.converged = true
		toys = append(toys, t)
	}
	r := &stages.Runner{Stages: stageList(toys...), Env: newEnv(b, dir, nil)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Up(ctx, stages.Selection{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFirstUp measures an `up` that applies every stage: each stage's
// progress is written atomically (temp file, fsync, rename) twice.
func BenchmarkFirstUp(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		dir := b.TempDir()
		var toys []*toy
		for _, n := range []string{"keys", "provision", "vault", "pki", "consul", "nomad", "jobs", "verify"} {
			toys = append(toys, newToy(n))
		}
		r := &stages.Runner{Stages: stageList(toys...), Env: newEnv(b, dir, nil)}
		b.StartTimer()
		if _, err := r.Up(ctx, stages.Selection{}); err != nil {
			b.Fatal(err)
		}
	}
}
