package ansible

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestArchiveOf(t *testing.T) {
	bin, cache := t.TempDir(), t.TempDir()
	path := filepath.Join(bin, "consul")
	content := bytes.Repeat([]byte("a binary, or nearly\n"), 10000)
	if err := os.WriteFile(path, content, 0o755); err != nil {
		t.Fatal(err)
	}
	a, err := archiveOf(cache, path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	if a.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("sha256 %s, want the binary's %x", a.SHA256, sum)
	}
	f, err := os.Open(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("the archive does not unpack to the binary: %v", err)
	}
	if fi, _ := os.Stat(a.Path); fi.Size() >= int64(len(content)) {
		t.Errorf("archive of %d bytes for a binary of %d", fi.Size(), len(content))
	}

	// The same file again: the cached archive, not a new one.
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(a.Path, old, old); err != nil {
		t.Fatal(err)
	}
	b, err := archiveOf(cache, path)
	if err != nil || b != a {
		t.Fatalf("second call: %+v, %v; want %+v", b, err, a)
	}
	if fi, _ := os.Stat(a.Path); time.Since(fi.ModTime()) > time.Minute {
		t.Errorf("a used archive keeps its old time %s: it would be pruned", fi.ModTime())
	}

	// A new binary (make tools after a version bump) gets its own archive;
	// the old one goes once no run used it for archiveUnused, and another
	// program's whose name starts alike stays.
	other := filepath.Join(bin, "consul-template")
	if err := os.WriteFile(other, content, 0o755); err != nil {
		t.Fatal(err)
	}
	o, err := archiveOf(cache, other)
	if err != nil {
		t.Fatal(err)
	}
	stale := time.Now().Add(-archiveUnused - time.Hour)
	for _, p := range []string{a.Path, o.Path} {
		if err := os.Chtimes(p, stale, stale); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, append(content, "v2"...), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := archiveOf(cache, path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Path == a.Path || c.SHA256 == a.SHA256 {
		t.Errorf("a new binary kept the old archive: %+v", c)
	}
	if _, err := os.Stat(a.Path); err == nil {
		t.Errorf("the old archive %s was not pruned", a.Path)
	}
	if _, err := os.Stat(o.Path); err != nil {
		t.Errorf("consul's new archive pruned consul-template's: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(cache, "*"))
	if len(left) != 4 {
		t.Errorf("cache holds %v, want consul's new archive, consul-template's, and their sums", left)
	}
}
