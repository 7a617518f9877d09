// Package platform lists the stages of a platform in the order they run.
package platform

import (
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Stages returns the platform's stages, in order.
func Stages() []stages.Stage {
	return []stages.Stage{
		stages.Placeholder("keys"),
		stages.Placeholder("provision"),
		stages.Placeholder("vault"),
		stages.Placeholder("pki"),
		stages.Placeholder("consul"),
		stages.Placeholder("nomad"),
		stages.Placeholder("jobs"),
		stages.Placeholder("verify"),
	}
}
