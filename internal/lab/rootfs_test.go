package lab

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMirrorIn(t *testing.T) {
	for name, tc := range map[string]struct{ file, want string }{
		"deb822": {`Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
`, "http://mirror.example/debian"},
		"one-line":     {"# deb http://old.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n", "http://m.example/debian"},
		"other suite":  {"deb http://m.example/debian trixie main\n", ""},
		"deb-src only": {"Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n", ""},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "sources")
			if err := os.WriteFile(p, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := mirrorIn(p); got != tc.want {
				t.Errorf("mirrorIn = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRootfsKeyFollowsPackages(t *testing.T) {
	k := rootfsKey(Suite, Packages)
	if rootfsKey(Suite, append(Packages[:len(Packages):len(Packages)], "curl")) == k {
		t.Error("the rootfs cache key does not change with the package list")
	}
	if rootfsKey("trixie", Packages) == k {
		t.Error("the rootfs cache key does not change with the suite")
	}
	if RootfsKey() != k {
		t.Error("RootfsKey is not the key of Suite and Packages")
	}
}
