// Package archive writes and reads bootstrap's backup archives: a gzipped
// tar of named files and a manifest of their checksums, encrypted with age
// to the keys the user gives. Nothing is ever written in clear text, and
// an archive is only handed back whole: every file present, listed and
// matching its checksum.
package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"filippo.io/age"
)

// ManifestName is the first file of every archive.
const ManifestName = "manifest.json"

// Format is the version of the archive layout.
const Format = 1

// Manifest describes an archive.
type Manifest struct {
	Format     int               `json:"format"`
	Created    time.Time         `json:"created"`
	Bootstrap  string            `json:"bootstrap_version"`
	Datacenter string            `json:"datacenter"`
	Region     string            `json:"region"`
	Versions   map[string]string `json:"versions"` // product -> version it ran
	Files      []File            `json:"files"`
}

// File is one file of an archive as the manifest lists it.
type File struct {
	Name   string `json:"name"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

// Entry is one file's name and contents.
type Entry struct {
	Name string
	Data []byte
}

// Error says an archive cannot be used: a wrong key, a corrupted or
// truncated file, or one that is not a bootstrap backup.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func bad(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// Write encrypts the entries and their manifest to the recipients. The
// manifest's Files are filled in here.
func Write(w io.Writer, to []age.Recipient, m Manifest, entries []Entry) error {
	if len(to) == 0 {
		return errors.New("no key to encrypt the backup to")
	}
	m.Format = Format
	m.Files = nil
	for _, e := range entries {
		if err := checkName(e.Name); err != nil {
			return err
		}
		sum := sha256.Sum256(e.Data)
		m.Files = append(m.Files, File{Name: e.Name, Size: len(e.Data), SHA256: hex.EncodeToString(sum[:])})
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	enc, err := age.Encrypt(w, to...)
	if err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	gz := gzip.NewWriter(enc)
	tw := tar.NewWriter(gz)
	for _, e := range append([]Entry{{ManifestName, mb}}, entries...) {
		hdr := &tar.Header{Name: e.Name, Mode: 0o600, Size: int64(len(e.Data)), ModTime: m.Created, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(e.Data); err != nil {
			return err
		}
	}
	return errors.Join(tw.Close(), gz.Close(), enc.Close())
}

// Read decrypts an archive with the identities and checks it whole. Any
// problem with the archive itself is an *Error.
func Read(r io.Reader, ids []age.Identity) (*Manifest, []Entry, error) {
	dec, err := age.Decrypt(r, ids...)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			return nil, nil, bad("the backup cannot be decrypted with the key given (wrong passphrase or identity)")
		}
		return nil, nil, bad("not a bootstrap backup, or its header is damaged: %v", err)
	}
	gz, err := gzip.NewReader(dec)
	if err != nil {
		return nil, nil, bad("the backup is damaged: %v", err)
	}
	tr := tar.NewReader(gz)
	var m *Manifest
	var entries []Entry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, bad("the backup is damaged or truncated: %v", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			return nil, nil, bad("the backup holds %q, which is not a regular file", hdr.Name)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, nil, bad("the backup is damaged or truncated: %v", err)
		}
		if m == nil {
			if hdr.Name != ManifestName {
				return nil, nil, bad("the backup does not start with its manifest")
			}
			m = &Manifest{}
			if err := json.Unmarshal(data, m); err != nil {
				return nil, nil, bad("the backup's manifest is damaged: %v", err)
			}
			if m.Format != Format {
				return nil, nil, bad("the backup has format %d; this bootstrap reads format %d", m.Format, Format)
			}
			continue
		}
		entries = append(entries, Entry{Name: hdr.Name, Data: data})
	}
	// The rest of the stream authenticates the last chunk.
	if _, err := io.Copy(io.Discard, dec); err != nil {
		return nil, nil, bad("the backup is damaged or truncated: %v", err)
	}
	if m == nil {
		return nil, nil, bad("the backup is empty")
	}
	if err := m.check(entries); err != nil {
		return nil, nil, err
	}
	return m, entries, nil
}

// check compares the entries with the manifest: same names, same order,
// same checksums.
func (m *Manifest) check(entries []Entry) error {
	if len(entries) != len(m.Files) {
		return bad("the backup holds %d files but its manifest lists %d", len(entries), len(m.Files))
	}
	for i, f := range m.Files {
		e := entries[i]
		if err := checkName(e.Name); err != nil {
			return &Error{Msg: err.Error()}
		}
		sum := sha256.Sum256(e.Data)
		if e.Name != f.Name || len(e.Data) != f.Size || hex.EncodeToString(sum[:]) != f.SHA256 {
			return bad("%s in the backup does not match its manifest's checksum", e.Name)
		}
	}
	return nil
}

// checkName refuses names that could leave the directory they are
// restored into.
func checkName(name string) error {
	if name == "" || path.IsAbs(name) || path.Clean(name) != name || name == ManifestName ||
		slices.Contains(strings.Split(name, "/"), "..") {
		return fmt.Errorf("archive entry name %q is not a clean relative path", name)
	}
	return nil
}

// Get returns the entry called name.
func Get(entries []Entry, name string) ([]byte, bool) {
	for _, e := range entries {
		if e.Name == name {
			return e.Data, true
		}
	}
	return nil, false
}

// Keys are what a backup is encrypted to or decrypted with.
type Keys struct {
	// Passphrase, when set, is the only key (age's scrypt recipient).
	Passphrase string
	// Recipients are age public keys ("age1...").
	Recipients []string
	// IdentityFile is an age identity file, for reading.
	IdentityFile string
}

// EncryptTo returns the recipients of a new archive.
func (k Keys) EncryptTo() ([]age.Recipient, error) {
	switch {
	case k.Passphrase != "" && len(k.Recipients) > 0:
		return nil, errors.New("give either a passphrase or recipients, not both: age encrypts to a passphrase alone")
	case k.Passphrase != "":
		r, err := age.NewScryptRecipient(k.Passphrase)
		if err != nil {
			return nil, err
		}
		return []age.Recipient{r}, nil
	case len(k.Recipients) > 0:
		var out []age.Recipient
		for _, s := range k.Recipients {
			r, err := age.ParseX25519Recipient(s)
			if err != nil {
				return nil, fmt.Errorf("recipient %q: %w", s, err)
			}
			out = append(out, r)
		}
		return out, nil
	}
	return nil, errors.New("no key to encrypt the backup to")
}

// DecryptWith returns the identities that open an archive.
func (k Keys) DecryptWith() ([]age.Identity, error) {
	var out []age.Identity
	if k.Passphrase != "" {
		id, err := age.NewScryptIdentity(k.Passphrase)
		if err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	if k.IdentityFile != "" {
		b, err := os.ReadFile(k.IdentityFile)
		if err != nil {
			return nil, fmt.Errorf("identity file: %w", err)
		}
		ids, err := age.ParseIdentities(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("identity file %s: %w", k.IdentityFile, err)
		}
		out = append(out, ids...)
	}
	if len(out) == 0 {
		return nil, errors.New("no key to decrypt the backup with")
	}
	return out, nil
}
