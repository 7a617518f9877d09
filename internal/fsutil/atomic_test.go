package fsutil_test

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
)

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func TestWriteFileReplaces(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	if err := fsutil.WriteFile(path, []byte("new content"), 0o600); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(path)
	b, _ := os.ReadFile(path)
	if string(b) != "new content" {
		t.Errorf("content = %q", b)
	}
	// A new file renamed into place, with the requested mode, not the old one.
	if os.SameFile(before, after) {
		t.Error("the file was rewritten in place, not replaced")
	}
	if after.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", after.Mode().Perm())
	}
	if got := names(t, dir); !slices.Equal(got, []string{"state.json"}) {
		t.Errorf("directory holds %v", got)
	}

	// A mode wider than the umask allows is kept: the mode is set with
	// chmod, so it is exactly what was asked for.
	if err := fsutil.WriteFile(path, []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
}

func TestWriteFileFailureCleansUp(t *testing.T) {
	dir := t.TempDir()
	if err := fsutil.WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
	// The rename fails when the target is a directory; the temporary file
	// must not stay behind.
	target := filepath.Join(dir, "taken")
	os.Mkdir(target, 0o700)
	os.WriteFile(filepath.Join(target, "inside"), nil, 0o600)
	err := fsutil.WriteFile(target, []byte("data"), 0o600)
	if err == nil {
		t.Fatal("replacing a directory succeeded")
	}
	if got := names(t, dir); !slices.Equal(got, []string{"taken"}) {
		t.Errorf("directory holds %v after a failed write", got)
	}
}

func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{".state.json.tmp-1234", ".x.json.tmp-9", "state.json", ".hidden", "notes.tmp-1", ".gitkeep"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o600)
	}
	os.Mkdir(filepath.Join(dir, ".dir.tmp-1"), 0o700) // not a file WriteFile makes
	if err := fsutil.RemoveTemps(dir); err != nil {
		t.Fatal(err)
	}
	want := []string{".dir.tmp-1", ".gitkeep", ".hidden", "notes.tmp-1", "state.json"}
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
	if err := fsutil.RemoveTemps(filepath.Join(dir, "missing")); err != nil {
		t.Errorf("missing directory: %v", err)
	}
	if err := fsutil.SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("SyncDir of a missing directory succeeded")
	}
}
