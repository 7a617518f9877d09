// Package imagearchive reads image archives in the format of `docker save`
// (which `docker load` reads): what an engine that cannot pull is given.
package imagearchive

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Archive is one image archive.
type Archive struct {
	Path string
	// ID is the image's ID in an engine that loaded it (its config's
	// digest, "sha256:…").
	ID   string
	Tags []string
}

// Read reads the manifest of the archive at path. An archive must hold one
// image with at least one tag: it is found by tag in the engine.
func Read(path string) (Archive, error) {
	f, err := os.Open(path)
	if err != nil {
		return Archive{}, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return Archive{}, fmt.Errorf("%s: no manifest.json: not an archive of `docker save`", path)
		}
		if err != nil {
			return Archive{}, fmt.Errorf("%s: not an archive of `docker save`: %w", path, err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct {
			Config   string
			RepoTags []string
		}
		if err := json.NewDecoder(tr).Decode(&m); err != nil {
			return Archive{}, fmt.Errorf("%s: manifest.json: %w", path, err)
		}
		if len(m) != 1 || len(m[0].RepoTags) == 0 {
			return Archive{}, fmt.Errorf("%s: holds %d images; give one tagged image per archive (docker save NAME:TAG)", path, len(m))
		}
		// The config's file name is its digest: "<hex>.json" (docker
		// save) or "sha256:<hex>" (go-containerregistry).
		hex := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m[0].Config), "sha256:"), ".json")
		if len(hex) != 64 {
			return Archive{}, fmt.Errorf("%s: manifest.json names config %q, not a digest", path, m[0].Config)
		}
		return Archive{Path: path, ID: "sha256:" + hex, Tags: m[0].RepoTags}, nil
	}
}

// Dir reads every *.tar of dir, in name order.
func Dir(dir string) ([]Archive, error) {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.tar"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%s has no image archives (*.tar)", dir)
	}
	out := make([]Archive, 0, len(paths))
	for _, p := range paths {
		a, err := Read(p)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}
