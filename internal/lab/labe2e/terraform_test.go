package labe2e_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/lab"
	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
)

// TestLabTerraform runs the terraform provider's whole path on real
// machines: terraform/lab creates a lab in `terraform apply`, bootstrap
// configures it over SSH with its own key, and `down` destroys it with
// `terraform destroy`, leaving nothing on the host.
func TestLabTerraform(t *testing.T) {
	needLab(t)
	tf := testcluster.Bin(t, "terraform")
	mirror := filepath.Join(platformtest.BinDir(), "tf-mirror")
	if _, err := os.Stat(filepath.Join(mirror, "registry.terraform.io", "hashicorp", "local")); err != nil {
		t.Fatalf("terraform/lab needs hashicorp/local from make tools: %v", err)
	}
	// The test's own CLI configuration: no registry can be reached here.
	cli := filepath.Join(t.TempDir(), "terraformrc")
	if err := os.WriteFile(cli, []byte(fmt.Sprintf("provider_installation {\n  filesystem_mirror {\n    path = %q\n  }\n}\n", mirror)), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TF_CLI_CONFIG_FILE", cli)

	labCmd := filepath.Join(t.TempDir(), "lab")
	build := exec.Command("go", "build", "-o", labCmd, "./tools/lab")
	build.Dir = testcluster.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./tools/lab: %v\n%s", err, out)
	}
	labDir := filepath.Join(t.TempDir(), "lab")
	// Registered first, so it runs last: after the platform's own down,
	// which destroys the lab unless the test failed before.
	t.Cleanup(func() {
		if err := lab.Down(context.Background(), labDir); err != nil {
			t.Errorf("cleanup: lab down: %v", err)
		}
	})

	p := platformtest.Prepare(t)
	binDir := platformtest.BinDir()
	p.WriteConfig(fmt.Sprintf(`provider "terraform" {
  module = %q
  binary = %q
  vars = {
    lab_command = %q
    dir         = %q
    bin_dir     = %q
    name        = "lf"
    net         = 204
    num_servers = 1
    num_clients = 1
  }
  service_manager = "systemd"
  install_method  = "binary"
  bin_dir         = %q
}

# The path under test is the provider's; TestLabProduction proves the
# monitoring jobs on machines. Without them this lab costs CI less.
jobs {
  driver = "raw_exec"
  prometheus {
    enabled = false
  }
  alertmanager {
    enabled = false
  }
  grafana {
    enabled = false
  }
}
`, filepath.Join(testcluster.RepoRoot(), "terraform", "lab"), tf, labCmd, labDir, binDir, binDir))

	start := time.Now()
	r := p.Up()
	t.Logf("bootstrap up (terraform apply, then the platform): %s", time.Since(start).Round(time.Second))
	if !strings.Contains(r.Stdout, "verify     changed") {
		t.Errorf("up did not run the verify stage:\n%s", r.Stdout)
	}
	st, err := lab.Load(labDir)
	if err != nil {
		t.Fatalf("terraform apply made no lab: %v", err)
	}
	var nspawns []int
	for _, m := range st.Machines {
		pid, err := lab.Nspawn(m)
		if err != nil {
			t.Fatal(err)
		}
		nspawns = append(nspawns, pid)
		want := []string{"consul.service", "nomad.service"}
		if m.Name == "server-1" {
			want = append(want, "vault.service")
		}
		for _, u := range want {
			out, err := lab.Exec(context.Background(), m, "systemctl", "is-active", u)
			if err != nil || strings.TrimSpace(string(out)) != "active" {
				t.Errorf("%s: %s is %q: %v", m.Name, u, strings.TrimSpace(string(out)), err)
			}
		}
	}

	if r := p.Up(); strings.Contains(r.Stdout, " changed ") {
		t.Errorf("a stage changed on the second up:\n%s", r.Stdout)
	}
	if r := p.Run([]string{"plan"}); r.Code != 0 {
		t.Errorf("plan after the second up: exit %d, want 0 (terraform and the platform converged)\n%s", r.Code, r.Output())
	}

	start = time.Now()
	if r := p.Run([]string{"down", "--auto-approve"}); r.Code != 0 {
		t.Fatalf("down: exit %d\n%s", r.Code, r.Output())
	}
	t.Logf("bootstrap down (terraform destroy): %s", time.Since(start).Round(time.Second))
	if _, err := lab.Load(labDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the lab's state is still there after down: %v", err)
	}
	if _, err := os.Stat(labDir); !errors.Is(err, fs.ErrNotExist) {
		ents, _ := os.ReadDir(labDir)
		t.Errorf("the lab's directory is still there after down: %v (%d entries)", err, len(ents))
	}
	if err := exec.Command("ip", "link", "show", st.Bridge).Run(); err == nil {
		t.Errorf("the lab's bridge %s is still there after down", st.Bridge)
	}
	for _, pid := range nspawns {
		if proc.Alive(pid) {
			t.Errorf("systemd-nspawn (pid %d) still runs after down", pid)
		}
	}
	p.AssertNoSecrets()
}

// needLab skips the test with -short and where the lab cannot run, or
// fails it with BOOTSTRAP_REQUIRE_TOOLS=1.
func needLab(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a lab of systemd machines and a platform on it; skipped with -short")
	}
	if err := lab.Available(); err != nil {
		if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
			t.Fatalf("the machine lab cannot run (BOOTSTRAP_REQUIRE_TOOLS=1): %v", err)
		}
		t.Skipf("the machine lab cannot run: %v", err)
	}
}
