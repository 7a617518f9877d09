package reconcile

import (
	"encoding/json"
	"slices"
	"testing"
)

func TestDifferences(t *testing.T) {
	// What Vault returns for a role bootstrap wrote: lists as []any in any
	// order, numbers as json.Number, fields bootstrap does not set.
	have := map[string]any{
		"policies":     []any{"b", "a"},
		"ttl":          json.Number("3600"),
		"bound_claims": map[string]any{"ns": "dev"},
		"role_type":    "jwt\n",
		"extra":        "ignored",
	}
	want := map[string]any{
		"policies":     []string{"a", "b"},
		"ttl":          3600,
		"bound_claims": map[string]any{"ns": "dev"},
		"role_type":    "jwt",
	}
	if d := Differences(have, want); len(d) != 0 {
		t.Errorf("equal values differ: %q", d)
	}
	want["policies"] = []string{"a"}
	want["ttl"] = 60
	want["bound_claims"] = map[string]any{"ns": "prod"}
	want["missing"] = "x"
	got := Differences(have, want)
	wantDiffs := []string{"bound_claims ns=dev; → ns=prod;", `missing "" → x`, "policies [a,b] → [a]", "ttl 3600 → 60"}
	if !slices.Equal(got, wantDiffs) {
		t.Errorf("Differences = %q\nwant %q", got, wantDiffs)
	}
}
