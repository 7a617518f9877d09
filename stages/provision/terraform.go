package provision

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages"
)

func planTerraform(context.Context, *stages.Env) ([]stages.Change, error) {
	return nil, fmt.Errorf("terraform provider: %w", stages.ErrNotImplemented)
}

func applyTerraform(context.Context, *stages.Env) error {
	return fmt.Errorf("terraform provider: %w", stages.ErrNotImplemented)
}

func destroyTerraform(context.Context, *stages.Env) error {
	return fmt.Errorf("terraform provider: %w", stages.ErrNotImplemented)
}

// waitSSH waits until every node accepts TCP connections on its SSH port.
func waitSSH(ctx context.Context, e *stages.Env, inv *inventory.Inventory) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for _, n := range inv.Nodes {
		addr := net.JoinHostPort(n.APIAddress(), strconv.Itoa(n.SSH.Port))
		e.Step("waiting for SSH on %s (%s)", n.Name, addr)
		for {
			c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("node %s never answered SSH on %s: %w", n.Name, addr, err)
			case <-time.After(2 * time.Second):
			}
		}
	}
	return nil
}
