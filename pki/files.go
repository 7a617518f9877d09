package pki

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/stages"
)

func (r *reconciler) caFiles(ctx context.Context) error {
	for _, ca := range r.spec.AllCAs() {
		var chain []string
		known := true
		for _, m := range ca.Mounts() {
			c := r.certs[m]
			if c == "" {
				known = false
			}
			chain = append(chain, c)
		}
		path := r.e.CAFile(ca.Name)
		rel, _ := filepath.Rel(r.e.StateDir, path)
		if !known {
			if r.plan.Apply {
				return fmt.Errorf("CA %s: certificates unknown after apply", ca.Name)
			}
			r.planned("create", "file "+rel, "CA chain of "+ca.Name)
		} else if err := r.file(path, rel, strings.Join(chain, "\n")+"\n", "CA chain of "+ca.Name); err != nil {
			return err
		}
		key := map[string]string{"consul": stages.OutConsulCACert, "nomad": stages.OutNomadCACert}[ca.Name]
		if key != "" {
			if err := r.output(key, path); err != nil {
				return err
			}
		}
	}
	return nil
}

// file makes sure path holds content. Certificates are public: 0644.
func (r *reconciler) file(path, rel, content, detail string) error {
	old, err := os.ReadFile(path)
	action := reconcile.Update
	switch {
	case errors.Is(err, fs.ErrNotExist):
		action = reconcile.Create
	case err != nil:
		return err
	case bytes.Equal(old, []byte(content)):
		return nil
	}
	return r.change(action, "file "+rel, detail, func() error {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		return fsutil.WriteFile(path, []byte(content), 0o644)
	})
}
