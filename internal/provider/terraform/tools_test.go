package terraform

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
)

// Missing tools skip a test, or fail it with BOOTSTRAP_REQUIRE_TOOLS=1, as
// testcluster.Bin does.

func missingTool(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg + " (BOOTSTRAP_REQUIRE_TOOLS=1)")
	}
	t.Skip(msg + "; run make tools")
}

// needTerraform returns bin/terraform; it skips the test without it (and without
// the providers `make tools` builds into bin/tf-mirror, when providers names
// any, as "hashicorp/local"), and points Terraform at a CLI configuration of
// the test's own: the machine's may name a missing file or a registry that
// cannot be reached.
func needTerraform(t *testing.T, providers ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs terraform; skipped with -short")
	}
	tf := testcluster.Bin(t, "terraform")
	mirror := filepath.Join(testcluster.RepoRoot(), "bin", "tf-mirror")
	for _, p := range providers {
		if _, err := os.Stat(filepath.Join(mirror, "registry.terraform.io", p)); err != nil {
			missingTool(t, "provider %s is not in %s", p, mirror)
		}
	}
	dir := t.TempDir()
	real := filepath.Join(dir, "mirror")
	if err := copyMirror(mirror, real); err != nil {
		t.Fatal(err)
	}
	cli := filepath.Join(dir, "terraformrc")
	conf := fmt.Sprintf(`provider_installation {
  filesystem_mirror {
    path = %q
  }
}
`, real)
	if err := os.WriteFile(cli, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TF_CLI_CONFIG_FILE", cli)
	return tf
}

// copyMirror recreates a provider mirror as real directories with links to
// the provider binaries: bin/tf-mirror links whole directories into the
// tools cache, and Terraform's filesystem mirror does not follow a linked
// directory.
func copyMirror(src, dst string) error {
	if _, err := os.Stat(src); err != nil {
		return os.MkdirAll(dst, 0o755)
	}
	var walk func(src, dst string) error
	walk = func(src, dst string) error {
		entries, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		for _, e := range entries {
			s := filepath.Join(src, e.Name())
			fi, err := os.Stat(s) // follows links
			if err != nil {
				return err
			}
			if fi.IsDir() {
				if err := walk(s, filepath.Join(dst, e.Name())); err != nil {
					return err
				}
				continue
			}
			target, err := filepath.EvalSymlinks(s)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, filepath.Join(dst, e.Name())); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(src, dst)
}
