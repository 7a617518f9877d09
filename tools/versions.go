// Package tools holds the pinned versions of every real component (the same
// file `make tools` reads), so the binary installs exactly what the tests ran.
package tools

import (
	_ "embed"
	"strings"
)

//go:embed versions.env
var versionsEnv string

// Versions returns the pins of versions.env, e.g. Versions()["VAULT_VERSION"].
func Versions() map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(versionsEnv, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = v
		}
	}
	return out
}
