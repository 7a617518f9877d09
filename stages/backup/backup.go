// Package backup takes a platform's backup — Vault, Consul and Nomad
// snapshots through their APIs and the state directory's secrets — and
// lays one out for `bootstrap restore`, whose `up` then rebuilds the
// platform around it.
package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/archive"
	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/consul"
	"github.com/platform-bootstrap/bootstrap/stages/nomad"
	"github.com/platform-bootstrap/bootstrap/stages/vault"
)

// Products are snapshotted in this order, each by its own API.
var products = []struct {
	name     string
	snapshot func(context.Context, *stages.Env, io.Writer) (string, error)
}{
	{"vault", vault.Snapshot},
	{"consul", consul.Snapshot},
	{"nomad", nomad.Snapshot},
}

// Parts of the state directory a backup holds. Only secrets and tls are
// put back by a restore; the rest is rebuilt by its `up` and kept for
// reference.
const (
	secretsPrefix = "state/secrets/"
	tlsPrefix     = "state/tls/"
)

var references = []string{"state.json", "inventory.json"}

// Take snapshots the running platform and reads its state directory.
func Take(ctx context.Context, e *stages.Env, version string) (archive.Manifest, []archive.Entry, error) {
	m := archive.Manifest{
		Created:    time.Now().UTC(),
		Bootstrap:  version,
		Datacenter: e.Config.Datacenter,
		Region:     e.Config.Region,
		Versions:   map[string]string{},
	}
	if e.Restoring() {
		return m, nil, errors.New("a restore is not finished: run bootstrap up first")
	}
	var entries []archive.Entry
	for _, p := range products {
		var buf bytes.Buffer
		v, err := p.snapshot(ctx, e, &buf)
		if err != nil {
			return m, nil, err
		}
		m.Versions[p.name] = v
		entries = append(entries, archive.Entry{Name: p.name + ".snap", Data: buf.Bytes()})
		e.Step("%s snapshot taken (%d KiB)", p.name, buf.Len()/1024)
	}
	for _, dir := range []struct{ path, prefix string }{{e.Secrets.Dir(), secretsPrefix}, {e.Path("tls"), tlsPrefix}} {
		files, err := readTree(dir.path, dir.prefix)
		if err != nil {
			return m, nil, err
		}
		entries = append(entries, files...)
	}
	for _, name := range references {
		b, err := os.ReadFile(e.Path(name))
		if err != nil {
			return m, nil, fmt.Errorf("read the state directory: %w", err)
		}
		entries = append(entries, archive.Entry{Name: "state/" + name, Data: b})
	}
	return m, entries, nil
}

func readTree(root, prefix string) ([]archive.Entry, error) {
	var out []archive.Entry
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || fsutil.IsTemp(d.Name()) {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out = append(out, archive.Entry{Name: prefix + filepath.ToSlash(rel), Data: b})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the state directory: %w", err)
	}
	return out, nil
}

// Check says whether a backup can be restored with this configuration: it
// must be of the same datacenter and region, and hold every part.
func Check(e *stages.Env, m *archive.Manifest, entries []archive.Entry) error {
	if m.Datacenter != e.Config.Datacenter || m.Region != e.Config.Region {
		return fmt.Errorf("the backup is of datacenter %q, region %q, but %s configures datacenter %q, region %q; restore it with the configuration it was taken with",
			m.Datacenter, m.Region, e.Config.Filename, e.Config.Datacenter, e.Config.Region)
	}
	for _, p := range products {
		if _, ok := archive.Get(entries, p.name+".snap"); !ok {
			return fmt.Errorf("the backup holds no %s snapshot", p.name)
		}
	}
	if _, ok := archive.Get(entries, secretsPrefix+stages.SecretVaultInit); !ok {
		return errors.New("the backup holds no Vault unseal keys")
	}
	return nil
}

// manifestFile marks a restore in progress: the backup it comes from.
const manifestFile = "manifest.json"

// Unpack puts a backup's secrets and TLS files into the state directory
// and its snapshots where the vault, consul and nomad stages restore them
// from. It refuses a state directory that holds another platform, and
// another backup's restore in progress; the same backup's is carried on.
func Unpack(e *stages.Env, m *archive.Manifest, entries []archive.Entry) error {
	dir := e.Path(stages.RestoreDir)
	mb, err := json.Marshal(m)
	if err != nil {
		return err
	}
	prev, err := os.ReadFile(filepath.Join(dir, manifestFile))
	switch {
	case err == nil && !bytes.Equal(prev, mb):
		return &InUseError{fmt.Sprintf("%s holds the unfinished restore of another backup; finish it with bootstrap up, or bootstrap down first", dir)}
	case err == nil:
		e.Step("carrying on with the restore of this backup")
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if _, ok, err := e.Secrets.Get(stages.SecretVaultInit); err != nil || ok {
		return errors.Join(err, &InUseError{fmt.Sprintf("%s holds a platform (its Vault keys are in %s); restore rebuilds a platform from nothing: run bootstrap down first", e.StateDir, e.Secrets.Path(stages.SecretVaultInit))})
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, ent := range entries {
		var err error
		switch name := ent.Name; {
		case strings.HasSuffix(name, ".snap") && !strings.Contains(name, "/"):
			err = fsutil.WriteFile(filepath.Join(dir, name), ent.Data, 0o600)
		case strings.HasPrefix(name, secretsPrefix):
			err = e.Secrets.Put(strings.TrimPrefix(name, secretsPrefix), string(ent.Data))
		case strings.HasPrefix(name, tlsPrefix):
			path := e.Path("tls", filepath.FromSlash(strings.TrimPrefix(name, tlsPrefix)))
			if err = os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
				err = fsutil.WriteFile(path, ent.Data, 0o644)
			}
		}
		if err != nil {
			return fmt.Errorf("restore %s: %w", ent.Name, err)
		}
	}
	// Written last: with it the restore is under way and `up` finishes it.
	return fsutil.WriteFile(filepath.Join(dir, manifestFile), mb, 0o600)
}

// InUseError means the state directory cannot take the backup.
type InUseError struct{ Msg string }

func (e *InUseError) Error() string { return e.Msg }
