package ansible

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
)

// Machines reached over SSH get each binary gzipped: a third of the bytes
// (consul: 126 MB, 40 MB gzipped), compressed once here rather than by ssh
// for every machine (Ansible's default ssh -C, which on a fast network
// cost more CPU than the transfer: 17 s for consul to 5 lab machines,
// against 5 s for the bytes alone). install-machine.yml unpacks it next to
// the installed binary and renames it into place, and compares the
// installed binary's SHA-256 first, so an unchanged one is not sent.

// archive is a binary's gzip in the cache, and the binary's SHA-256.
type archive struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
}

// archiveUnused is how long an archive no run used stays in the cache: the
// archives of older versions go after an upgrade, those of a version that
// another platform on this machine still runs stay.
const archiveUnused = 7 * 24 * time.Hour

// archiveOf returns the archive of the binary at path, made in dir when the
// cache has none for its fileIdentity.
func archiveOf(dir, path string) (archive, error) {
	ident, err := fileIdentity(path)
	if err != nil {
		return archive{}, err
	}
	id := sha256.Sum256([]byte(ident))
	name := filepath.Base(path)
	base := filepath.Join(dir, name+"-"+hex.EncodeToString(id[:8]))
	if sum, err := os.ReadFile(base + ".sha256"); err == nil {
		if _, err := os.Stat(base + ".gz"); err == nil {
			now := time.Now()
			os.Chtimes(base+".gz", now, now) // in use: see archiveUnused
			return archive{Path: base + ".gz", SHA256: strings.TrimSpace(string(sum))}, nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return archive{}, fmt.Errorf("binary archives: %w", err)
	}
	sum, err := compress(path, base+".gz")
	if err != nil {
		return archive{}, fmt.Errorf("compress %s: %w", path, err)
	}
	// The sum last: a sum means its archive is whole.
	if err := fsutil.WriteFile(base+".sha256", []byte(sum+"\n"), 0o600); err != nil {
		return archive{}, fmt.Errorf("binary archives: %w", err)
	}
	pruneArchives(dir, name, base)
	return archive{Path: base + ".gz", SHA256: sum}, nil
}

// compress writes src gzipped to dst (through a temporary file renamed
// into place) and returns src's SHA-256.
func compress(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	// BestSpeed: within a few percent of the default's size at several
	// times its speed on Go binaries.
	zw, _ := gzip.NewWriterLevel(tmp, gzip.BestSpeed)
	_, err = io.Copy(zw, io.TeeReader(in, h))
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// pruneArchives removes name's other archives that no run used for
// archiveUnused.
func pruneArchives(dir, name, keep string) {
	old, _ := filepath.Glob(filepath.Join(dir, name+"-*.gz"))
	for _, gz := range old {
		base := strings.TrimSuffix(gz, ".gz")
		// consul-*.gz also matches consul-template-*.gz, a longer name.
		if base == keep || len(filepath.Base(base)) != len(filepath.Base(keep)) {
			continue
		}
		if fi, err := os.Stat(gz); err == nil && time.Since(fi.ModTime()) > archiveUnused {
			os.Remove(base + ".sha256")
			os.Remove(gz)
		}
	}
}

// addArchives gives each host of hosts that is sent binaries over SSH the
// archives of its roles' binaries (binary_archives: program → archive).
func addArchives(ai Inventory, hosts, roles []string) error {
	cache, err := os.UserCacheDir()
	if err != nil {
		return fmt.Errorf("binary archives: %w", err)
	}
	dir := filepath.Join(cache, "bootstrap", "binaries")
	made := map[string]archive{}
	for _, name := range hosts {
		v := ai.Hosts[name]
		bin, _ := v["bin_dir"].(string)
		if v["install_method"] != "binary" || v["ansible_connection"] == "local" || bin == "" {
			continue
		}
		archives := map[string]archive{}
		for _, role := range roles {
			prog, ok := roleBinaries[role]
			if !ok {
				continue
			}
			path := filepath.Join(bin, prog)
			a, ok := made[path]
			if !ok {
				if a, err = archiveOf(dir, path); err != nil {
					return err
				}
				made[path] = a
			}
			archives[prog] = a
		}
		v["binary_archives"] = archives
	}
	return nil
}
