// Package secrets keeps the secrets a platform run generates — unseal keys,
// bootstrap tokens, gossip keys, passwords — and makes sure they are never
// printed.
//
// The store is a directory (0700) of files (0600), each written atomically.
// Every value read or written is registered with the Redactor that all output
// passes through.
package secrets

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
)

// Store is a directory of secret files.
type Store struct {
	dir string
	red *Redactor
}

// Open opens (creating if needed) the store at dir, tightens permissions that
// drifted, and registers every stored value with red.
func Open(dir string, red *Redactor) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("secret store: %w", err)
	}
	s := &Store{dir: dir, red: red}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(path, 0o700)
		}
		if strings.HasPrefix(d.Name(), ".") {
			// A temporary file of an atomic write: left by a crash, or
			// a running `up`'s write in flight when a command that holds
			// no lock (status, env) opens the store. Never removed here;
			// the lock holder does that (stages.Open).
			return nil
		}
		if err := os.Chmod(path, 0o600); err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		red.Add(string(b))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("secret store %s: %w", dir, err)
	}
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Redactor is the redactor the store registers values with.
func (s *Store) Redactor() *Redactor { return s.red }

// Path is the file that holds secret name, whether or not it exists.
func (s *Store) Path(name string) string {
	return filepath.Join(s.dir, filepath.FromSlash(name))
}

func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "..") || strings.HasPrefix(filepath.Base(name), ".") {
		return fmt.Errorf("invalid secret name %q", name)
	}
	return nil
}

// Get returns the secret and whether it exists.
func (s *Store) Get(name string) (string, bool, error) {
	if err := checkName(name); err != nil {
		return "", false, err
	}
	b, err := os.ReadFile(s.Path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read secret %s: %w", name, err)
	}
	s.red.Add(string(b))
	return string(b), true, nil
}

// Put stores a secret atomically. The value is registered for redaction
// before it touches the disk.
func (s *Store) Put(name, value string) error {
	if err := checkName(name); err != nil {
		return err
	}
	s.red.Add(value)
	path := s.Path(name)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("store secret %s: %w", name, err)
	}
	if err := fsutil.WriteFile(path, []byte(value), 0o600); err != nil {
		return fmt.Errorf("store secret %s: %w", name, err)
	}
	return nil
}

// GetOrCreate returns the stored secret, or generates one with gen, stores it
// and returns it. created reports whether it was generated now.
func (s *Store) GetOrCreate(name string, gen func() (string, error)) (value string, created bool, err error) {
	v, ok, err := s.Get(name)
	if err != nil || ok {
		return v, false, err
	}
	v, err = gen()
	if err != nil {
		return "", false, fmt.Errorf("generate secret %s: %w", name, err)
	}
	if err := s.Put(name, v); err != nil {
		return "", false, err
	}
	return v, true, nil
}

// Delete removes a secret; a missing one is not an error.
func (s *Store) Delete(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := os.Remove(s.Path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete secret %s: %w", name, err)
	}
	return nil
}

// Values returns every stored secret value, for tests that scan output.
func (s *Store) Values() ([]string, error) {
	var out []string
	err := filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out = append(out, string(b))
		return nil
	})
	return out, err
}

// NewUUID returns a random (version 4) UUID, the form Consul and Nomad
// expect for token secrets bootstrap chooses itself.
func NewUUID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:]), nil
}
