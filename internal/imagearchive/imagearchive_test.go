package imagearchive

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeArchive(t *testing.T, path string, files map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRead(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	dir := t.TempDir()
	for name, cfg := range map[string]string{
		"save.tar": hex + ".json",         // docker save before 25
		"oci.tar":  "blobs/sha256/" + hex, // docker save since 25
		"gcr.tar":  "sha256:" + hex,       // go-containerregistry (tools/images)
	} {
		writeArchive(t, filepath.Join(dir, name), map[string]string{
			"layer.tar":     "x",
			"manifest.json": `[{"Config":"` + cfg + `","RepoTags":["prom/prometheus:v3.15.0"],"Layers":["layer.tar"]}]`,
		})
	}
	got, err := Dir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d archives, want 3", len(got))
	}
	for _, a := range got {
		if a.ID != "sha256:"+hex || len(a.Tags) != 1 || a.Tags[0] != "prom/prometheus:v3.15.0" {
			t.Errorf("%s: %+v", a.Path, a)
		}
	}
}

func TestReadRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, files := range map[string]map[string]string{
		"no-manifest.tar": {"layer.tar": "x"},
		"untagged.tar":    {"manifest.json": `[{"Config":"sha256:` + strings.Repeat("ab", 32) + `","RepoTags":[]}]`},
		"two-images.tar":  {"manifest.json": `[{"Config":"a","RepoTags":["a:1"]},{"Config":"b","RepoTags":["b:1"]}]`},
		"bad-config.tar":  {"manifest.json": `[{"Config":"config.json","RepoTags":["a:1"]}]`},
	} {
		p := filepath.Join(dir, name)
		writeArchive(t, p, files)
		if a, err := Read(p); err == nil {
			t.Errorf("%s: read as %+v, want an error", name, a)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "text.tar"), []byte("not a tar"), 0o644); err != nil {
		t.Fatal(err)
	}
	if a, err := Read(filepath.Join(dir, "text.tar")); err == nil {
		t.Errorf("text.tar: read as %+v, want an error", a)
	}
	if _, err := Dir(t.TempDir()); err == nil {
		t.Error("an empty directory: no error")
	}
}
