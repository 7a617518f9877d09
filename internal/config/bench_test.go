package config

import (
	"os"
	"testing"
)

// BenchmarkParseFull measures parsing and validating the complete example
// configuration (every block), what every command does first.
func BenchmarkParseFull(b *testing.B) {
	src, err := os.ReadFile("testdata/valid/full.hcl")
	if err != nil {
		b.Fatal(err)
	}
	b.Setenv("BOOTSTRAP_TEST_RUNNER_TOKEN", "glrt-from-the-environment")
	b.ReportAllocs()
	for b.Loop() {
		if _, diags := Parse("testdata/valid/full.hcl", src); diags.HasErrors() {
			b.Fatal(diags)
		}
	}
}
