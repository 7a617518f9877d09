package stages

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// RestoreDir is where `bootstrap restore` leaves the snapshots of a backup
// for the vault, consul and nomad stages. A snapshot stays until its stage
// has put it into the new cluster, so an interrupted restore is finished by
// the next `up`.
const RestoreDir = "restore"

// RestoreSnapshot returns the path of product's snapshot waiting to be
// restored, if there is one.
func (e *Env) RestoreSnapshot(product string) (string, bool) {
	path := e.Path(RestoreDir, product+".snap")
	_, err := os.Stat(path)
	return path, err == nil
}

// RestoreDone forgets product's snapshot once its cluster holds it, and the
// restore directory with the last one.
func (e *Env) RestoreDone(product string) error {
	if err := os.Remove(e.Path(RestoreDir, product+".snap")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("restore: %w", err)
	}
	left, err := filepath.Glob(e.Path(RestoreDir, "*.snap"))
	if err != nil || len(left) > 0 {
		return err
	}
	return os.RemoveAll(e.Path(RestoreDir))
}

// Restoring reports whether a restore is under way.
func (e *Env) Restoring() bool {
	_, err := os.Stat(e.Path(RestoreDir))
	return err == nil
}
