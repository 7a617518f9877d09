package terraform

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// TODO: switch to internal/testcluster once it exists; these follow its
// rules: a missing tool skips the test, unless BOOTSTRAP_REQUIRE_TOOLS=1.

// repoRoot is the repository's top directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above " + file)
		}
		dir = parent
	}
}

func missingTool(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg + " (BOOTSTRAP_REQUIRE_TOOLS=1)")
	}
	t.Skip(msg + "; run make tools")
}

// needTerraform skips the test without a terraform binary (and, when
// providers is true, without the provider mirror `make tools` builds), and
// points Terraform at a CLI configuration of the test's own: the machine's
// may name a missing file or a registry that cannot be reached.
func needTerraform(t *testing.T, providers bool) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs terraform; skipped with -short")
	}
	if _, err := exec.LookPath("terraform"); err != nil {
		missingTool(t, "terraform is not on PATH")
	}
	mirror := filepath.Join(repoRoot(t), "bin", "tf-mirror")
	if providers {
		for _, p := range []string{"local", "tls"} {
			if _, err := os.Stat(filepath.Join(mirror, "registry.terraform.io", "hashicorp", p)); err != nil {
				missingTool(t, "provider hashicorp/%s is not in %s", p, mirror)
			}
		}
	}
	cli := filepath.Join(t.TempDir(), "terraformrc")
	conf := fmt.Sprintf(`provider_installation {
  filesystem_mirror {
    path    = %q
    include = ["registry.terraform.io/hashicorp/*"]
  }
}
`, mirror)
	if err := os.WriteFile(cli, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TF_CLI_CONFIG_FILE", cli)
}
