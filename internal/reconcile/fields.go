package reconcile

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// Differences compares the fields an API returned (have) with the fields
// bootstrap would write (want) and describes each one that differs, as
// "name have → want". Fields the API returns and bootstrap does not set are
// not compared. Values are compared the way the APIs return them: lists as
// sets, numbers in any JSON type, strings without surrounding space.
func Differences(have, want map[string]any) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		h, w := normal(have[k]), normal(want[k])
		if h != w {
			out = append(out, fmt.Sprintf("%s %s → %s", k, show(h), show(w)))
		}
	}
	return out
}

func show(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// normal renders a value as a string that is the same for every way the
// Vault, Consul and Nomad APIs return an equal value.
func normal(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return strings.TrimSpace(t)
	case []string:
		return set(t)
	case []any:
		s := make([]string, len(t))
		for i, x := range t {
			s[i] = normal(x)
		}
		return set(s)
	case map[string]any:
		var b strings.Builder
		for _, k := range slices.Sorted(maps.Keys(t)) {
			fmt.Fprintf(&b, "%s=%s;", k, normal(t[k]))
		}
		return b.String()
	case map[string]string:
		var b strings.Builder
		for _, k := range slices.Sorted(maps.Keys(t)) {
			fmt.Fprintf(&b, "%s=%s;", k, strings.TrimSpace(t[k]))
		}
		return b.String()
	}
	return fmt.Sprint(v)
}

func set(s []string) string {
	s = slices.Clone(s)
	sort.Strings(s)
	return "[" + strings.Join(s, ",") + "]"
}
