package platform_test

import (
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
)

// BenchmarkPlatform brings a default local platform up once (reported as
// first-up-s) and then measures a converged `up` of the real binary: every
// stage asks the live Vault, Consul and Nomad and changes nothing.
func BenchmarkPlatform(b *testing.B) {
	p := platformtest.New(b, "", "")
	start := time.Now()
	p.Up()
	firstUp := time.Since(start)
	for b.Loop() {
		p.Up()
	}
	// Custom metrics are reported after the loop, which resets them.
	b.ReportMetric(firstUp.Seconds(), "first-up-s")
	start = time.Now()
	if r := p.Run([]string{"down", "--auto-approve"}); r.Code != 0 {
		b.Fatalf("down: %s", r.Output())
	}
	b.ReportMetric(time.Since(start).Seconds(), "down-s")
}
