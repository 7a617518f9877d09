// Package platform lists the stages of a platform in the order they run.
package platform

import (
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/consul"
	"github.com/platform-bootstrap/bootstrap/stages/jobs"
	"github.com/platform-bootstrap/bootstrap/stages/keys"
	"github.com/platform-bootstrap/bootstrap/stages/nomad"
	"github.com/platform-bootstrap/bootstrap/stages/pki"
	"github.com/platform-bootstrap/bootstrap/stages/provision"
	"github.com/platform-bootstrap/bootstrap/stages/vault"
	"github.com/platform-bootstrap/bootstrap/stages/verify"
)

// Names returns the names of the stages, in order.
func Names() []string {
	var out []string
	for _, st := range Stages() {
		out = append(out, st.Name())
	}
	return out
}

// Stages returns the platform's stages, in order.
func Stages() []stages.Stage {
	return []stages.Stage{
		keys.New(),
		provision.New(),
		vault.New(),
		pki.New(),
		consul.New(),
		nomad.New(),
		jobs.New(),
		verify.New(),
	}
}
