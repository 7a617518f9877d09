// Package crashpoint lets tests kill the process at a named point, to prove
// that a run killed exactly there is finished by the next run (like etcd's
// gofail). Set BOOTSTRAP_CRASHPOINT=name (or a comma-separated list) and the
// process sends itself SIGKILL when it reaches that point. Unset, Hit does
// nothing.
package crashpoint

import (
	"os"
	"strings"
	"syscall"
)

// Env is the variable that arms crash points.
const Env = "BOOTSTRAP_CRASHPOINT"

// Hit kills the process with SIGKILL if name is armed.
func Hit(name string) {
	armed := os.Getenv(Env)
	if armed == "" {
		return
	}
	for _, n := range strings.Split(armed, ",") {
		if strings.TrimSpace(n) == name {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL cannot be caught; wait for it to land
		}
	}
}
