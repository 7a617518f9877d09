package cluster

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
)

// StopLocal stops one service of a node of the local provider by its pid
// file.
func StopLocal(ctx context.Context, n inventory.Node, name string) error {
	pf := filepath.Join(n.Local.Root, "run", name+".pid")
	pid, err := proc.ReadPidFile(pf)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := proc.Terminate(ctx, pid, 20*time.Second); err != nil {
		return fmt.Errorf("stop %s on %s: %w", name, n.Name, err)
	}
	return os.Remove(pf)
}
