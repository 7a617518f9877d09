// Command images builds the platform jobs' docker profile images from the
// binaries make tools installed, as archives `docker load` reads: engines
// here cannot pull. Each is tagged as jobs.Images names it, so the docker
// profile runs the very binaries the tests run, except Grafana, whose
// tested build (GRAFANA_VERSION) is tagged as what it is, not as the
// release the profile names. GitLab Runner is not built here, so it has
// no image.
//
// An image holds the program, the C libraries a dynamically linked one
// needs (taken from this machine, where the program runs too), the files
// it reads at start, and /etc/passwd with the users the upstream images
// run as. Entrypoints, working directories and users are upstream's, so
// that the job files' arguments mean the same to both.
//
//	go run ./tools/images -bin bin -out bin/images
//
// An archive whose tag and inputs are unchanged is not rebuilt.
package main

import (
	"archive/tar"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/platform-bootstrap/bootstrap/jobs"
	"github.com/platform-bootstrap/bootstrap/tools"
)

// image is one image to build: files maps a path in the image to a file or
// directory of this machine.
type image struct {
	file  string // archive name in -out
	tag   string
	files map[string]string
	cfg   v1.Config
}

const passwd = "root:x:0:0:root:/root:/sbin/nologin\ngrafana:x:472:0::/usr/share/grafana:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
const group = "root:x:0:\nnobody:x:65534:\n"

func images(bin string, pins map[string]string) []image {
	tags := jobs.Images(pins)
	b := func(name string) string { return filepath.Join(bin, name) }
	return []image{
		{"fabio.tar", tags[jobs.Fabio]["image"],
			map[string]string{"/usr/bin/fabio": b("fabio")},
			v1.Config{Entrypoint: []string{"/usr/bin/fabio"}}},
		{"prometheus.tar", tags[jobs.Prometheus]["image"],
			map[string]string{"/bin/prometheus": b("prometheus"), "/prometheus": ""},
			v1.Config{Entrypoint: []string{"/bin/prometheus"}, User: "nobody", WorkingDir: "/prometheus"}},
		{"alertmanager.tar", tags[jobs.Prometheus]["alertmanager_image"],
			map[string]string{"/bin/alertmanager": b("alertmanager"), "/alertmanager": ""},
			v1.Config{Entrypoint: []string{"/bin/alertmanager"}, User: "nobody", WorkingDir: "/alertmanager"}},
		{"node-exporter.tar", tags[jobs.NodeExporter]["image"],
			map[string]string{"/bin/node_exporter": b("prometheus-node-exporter")},
			v1.Config{Entrypoint: []string{"/bin/node_exporter"}, User: "nobody"}},
		{"grafana.tar", "grafana/grafana-oss:" + pins["GRAFANA_VERSION"],
			map[string]string{
				"/usr/share/grafana/bin/grafana": b("grafana"),
				"/usr/share/grafana/conf":        b("grafana-home/conf"),
				"/usr/share/grafana/public":      b("grafana-home/public"),
			},
			v1.Config{Entrypoint: []string{"/usr/share/grafana/bin/grafana"}, User: "472", WorkingDir: "/usr/share/grafana",
				Env: []string{"GF_PATHS_HOME=/usr/share/grafana", "PATH=/usr/share/grafana/bin:/usr/bin:/bin"}}},
	}
}

func main() {
	bin := flag.String("bin", "bin", "directory of make tools' binaries")
	out := flag.String("out", "bin/images", "directory the archives are written to")
	flag.Parse()
	log.SetFlags(0)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	for _, im := range images(*bin, tools.Versions()) {
		start := time.Now()
		built, err := build(im, *out)
		if err != nil {
			log.Fatalf("image %s: %v", im.tag, err)
		}
		if built {
			log.Printf("images: %s in %s (%s)", im.tag, filepath.Join(*out, im.file), time.Since(start).Round(time.Millisecond))
		}
	}
}

// build writes im's archive unless one of the same inputs is there.
func build(im image, out string) (bool, error) {
	layer, err := layerTar(im)
	if err != nil {
		return false, err
	}
	defer os.Remove(layer)
	key, err := inputsKey(im, layer)
	if err != nil {
		return false, err
	}
	dst := filepath.Join(out, im.file)
	stamp := dst + ".key"
	if have, err := os.ReadFile(stamp); err == nil && string(have) == key {
		if _, err := os.Stat(dst); err == nil {
			return false, nil
		}
	}
	l, err := tarball.LayerFromFile(layer)
	if err != nil {
		return false, err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: l, History: v1.History{CreatedBy: "tools/images", Created: v1.Time{}}})
	if err != nil {
		return false, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return false, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Config = "amd64", "linux", im.cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return false, err
	}
	tag, err := name.NewTag(im.tag)
	if err != nil {
		return false, err
	}
	tmp := dst + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		os.Remove(tmp)
		return false, err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return false, err
	}
	return true, os.WriteFile(stamp, []byte(key), 0o644)
}

// inputsKey names an archive's inputs: its tag, config and layer.
func inputsKey(im image, layer string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%+v\n", im.tag, im.cfg)
	f, err := os.Open(layer)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// layerTar writes the image's one layer to a temporary file: its files,
// their libraries and /etc/passwd, with fixed times and owners so the same
// inputs give the same bytes.
func layerTar(im image) (string, error) {
	f, err := os.CreateTemp("", "layer-*.tar")
	if err != nil {
		return "", err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	w := &layerWriter{tw: tw, dirs: map[string]bool{}, libs: map[string]bool{}}
	w.file("/etc/passwd", 0o644, []byte(passwd))
	w.file("/etc/group", 0o644, []byte(group))
	w.dir("/tmp", 0o1777)
	for _, dst := range slices.Sorted(func(yield func(string) bool) {
		for k := range im.files {
			if !yield(k) {
				return
			}
		}
	}) {
		src := im.files[dst]
		if src == "" {
			// A directory the upstream image has for the program's data.
			w.dir(dst, 0o777)
			continue
		}
		w.tree(dst, src)
	}
	if err := errors.Join(w.err, tw.Close()); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

type layerWriter struct {
	tw   *tar.Writer
	dirs map[string]bool
	libs map[string]bool
	err  error
}

func (w *layerWriter) header(h *tar.Header) {
	if w.err != nil {
		return
	}
	h.Name = strings.TrimPrefix(h.Name, "/")
	h.ModTime, h.Format = time.Unix(0, 0), tar.FormatPAX
	w.err = w.tw.WriteHeader(h)
}

// dir writes p and its missing parents.
func (w *layerWriter) dir(p string, mode int64) {
	if p == "/" || w.dirs[p] {
		return
	}
	w.dir(path.Dir(p), 0o755)
	w.dirs[p] = true
	w.header(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode})
}

func (w *layerWriter) file(p string, mode int64, b []byte) {
	w.dir(path.Dir(p), 0o755)
	w.header(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(b))})
	if w.err == nil {
		_, w.err = w.tw.Write(b)
	}
}

// tree copies src (a file, or a directory with everything under it) to dst,
// following symlinks (make tools links bin/ into its cache), and the C
// libraries of every ELF program it copies.
func (w *layerWriter) tree(dst, src string) {
	if w.err != nil {
		return
	}
	fi, err := os.Stat(src)
	if err != nil {
		w.err = err
		return
	}
	if !fi.IsDir() {
		w.err = w.program(dst, src, fi)
		return
	}
	w.dir(dst, 0o755)
	ents, err := os.ReadDir(src)
	if err != nil {
		w.err = err
		return
	}
	for _, e := range ents {
		w.tree(path.Join(dst, e.Name()), filepath.Join(src, e.Name()))
	}
}

// program copies a file, and if it is a dynamically linked program, the
// libraries it needs (once per image).
func (w *layerWriter) program(dst, src string, fi fs.FileInfo) error {
	if err := w.copyFile(dst, src, fi); err != nil {
		return err
	}
	if fi.Mode()&0o111 == 0 {
		return nil
	}
	libs, err := libraries(src)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	for _, l := range libs {
		if w.libs[l] {
			continue
		}
		w.libs[l] = true
		li, err := os.Stat(l)
		if err != nil {
			return err
		}
		if err := w.copyFile(l, l, li); err != nil {
			return err
		}
	}
	return nil
}

func (w *layerWriter) copyFile(dst, src string, fi fs.FileInfo) error {
	w.dir(path.Dir(dst), 0o755)
	w.header(&tar.Header{Typeflag: tar.TypeReg, Name: dst, Mode: int64(fi.Mode().Perm()), Size: fi.Size()})
	if w.err != nil {
		return w.err
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w.tw, f)
	return err
}

// libDirs are where this machine (Debian, amd64) keeps C libraries.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"}

// libraries returns the paths of the dynamic loader and the libraries an
// ELF program needs, transitively; none for a static program or another
// kind of file.
func libraries(prog string) ([]string, error) {
	f, err := elf.Open(prog)
	if err != nil {
		return nil, nil // a script or data file
	}
	defer f.Close()
	var out []string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return nil, err
			}
			out = append(out, strings.TrimRight(string(b), "\x00"))
		}
	}
	if len(out) == 0 {
		return nil, nil // static
	}
	seen := map[string]bool{}
	var walk func(*elf.File) error
	walk = func(f *elf.File) error {
		needed, err := f.ImportedLibraries()
		if err != nil {
			return err
		}
		for _, n := range needed {
			if seen[n] {
				continue
			}
			seen[n] = true
			p, err := findLib(n)
			if err != nil {
				return err
			}
			out = append(out, p)
			lf, err := elf.Open(p)
			if err != nil {
				return err
			}
			err = walk(lf)
			lf.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(f)
}

func findLib(name string) (string, error) {
	for _, d := range libDirs {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("library %s not in %v", name, libDirs)
}
