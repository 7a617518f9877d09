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
	cli := filepath.Join(t.TempDir(), "terraformrc")
	conf := fmt.Sprintf(`provider_installation {
  filesystem_mirror {
    path = %q
  }
}
`, mirror)
	if err := os.WriteFile(cli, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TF_CLI_CONFIG_FILE", cli)
	return tf
}
