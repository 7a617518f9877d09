package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/stages/platform"
	"github.com/platform-bootstrap/bootstrap/tools"
)

const corpus = "../../internal/config/testdata"

// Every malformed configuration is refused by every command that reads it,
// with exit code 2, the diagnostics of its .golden file, nothing on stdout,
// and the state directory untouched: not created when missing, not changed
// when it holds a platform, and no default .bootstrap next to the file.
func TestInvalidConfigs(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join(corpus, "invalid"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 30 {
		t.Fatalf("only %d invalid configurations in %s", len(files), dir)
	}
	env := childEnv(t)
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(strings.TrimSuffix(name, ".hcl"), func(t *testing.T) {
			golden := filepath.Join(dir, strings.TrimSuffix(name, ".hcl")+".golden")
			missing := filepath.Join(t.TempDir(), "state")
			r := runIn(t, dir, env, "validate", "-c", name, "--state-dir", missing)
			if *update {
				if err := os.WriteFile(golden, []byte(r.stderr), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			check := func(cmd string, r result) {
				t.Helper()
				if r.code != exitUsage || r.stderr != string(want) || r.stdout != "" {
					t.Errorf("%s: exit %d\nstdout: %q\nstderr:\n%s\nwant exit 2 and:\n%s", cmd, r.code, r.stdout, r.stderr, want)
				}
			}
			check("validate", r)
			for _, cmd := range []string{"up", "plan", "down", "status", "env"} {
				check(cmd, runIn(t, dir, env, cmd, "-c", name, "--state-dir", missing, "--auto-approve"))
			}
			if _, err := os.Stat(missing); !os.IsNotExist(err) {
				t.Errorf("a refused configuration created the state directory %s", missing)
			}
			// The default state directory sits next to the file.
			check("up (default state dir)", runIn(t, dir, env, "up", "-c", name, "--auto-approve"))
			if _, err := os.Stat(filepath.Join(dir, ".bootstrap")); !os.IsNotExist(err) {
				t.Errorf("a refused configuration created %s", filepath.Join(dir, ".bootstrap"))
			}
			state := populatedStateDir(t)
			before := snapshot(t, state)
			check("up (existing platform)", runIn(t, dir, env, "up", "-c", name, "--state-dir", state, "--auto-approve"))
			check("down (existing platform)", runIn(t, dir, env, "down", "-c", name, "--state-dir", state, "--auto-approve"))
			if after := snapshot(t, state); !reflect.DeepEqual(before, after) {
				t.Errorf("a refused configuration changed the state directory:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestValidConfigs(t *testing.T) {
	dir, _ := filepath.Abs(filepath.Join(corpus, "valid"))
	env := childEnv(t, "BOOTSTRAP_TEST_RUNNER_TOKEN=glrt-test-token")
	for name, want := range map[string]string{
		"minimal.hcl":       "minimal.hcl is valid: local provider, 3 server(s) and 2 client(s) on 127.0.1.0/24\n",
		"full.hcl":          "full.hcl is valid: local provider, 5 server(s) and 3 client(s) on 127.0.7.0/24\n",
		"static.hcl":        "static.hcl is valid: static provider, 2 node(s)\n",
		"terraform.hcl":     "terraform.hcl is valid: terraform provider, module terraform/digitalocean\n",
		"literal_token.hcl": "literal_token.hcl is valid: local provider, 3 server(s) and 2 client(s) on 127.0.1.0/24\n",
	} {
		state := filepath.Join(t.TempDir(), "state")
		r := runIn(t, dir, env, "validate", "-c", name, "--state-dir", state)
		if r.code != exitOK || r.stdout != want {
			t.Errorf("validate %s: exit %d, stdout %q, stderr %q", name, r.code, r.stdout, r.stderr)
		}
		wantErr := ""
		if name == "literal_token.hcl" {
			wantErr = `Warning: literal_token.hcl:5,11-43: Secret written in the configuration file; token is a literal; anyone who can read this file can read it. Use token = env("GITLAB_RUNNER_TOKEN") instead.` + "\n"
		}
		if r.stderr != wantErr {
			t.Errorf("validate %s: stderr %q, want %q", name, r.stderr, wantErr)
		}
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Errorf("validate created the state directory")
		}
	}
	// The runner token is a secret from the environment: full.hcl without it
	// is refused, naming the variable.
	r := runIn(t, dir, childEnv(t), "validate", "-c", "full.hcl")
	if r.code != exitUsage || !strings.Contains(r.stderr, "environment variable BOOTSTRAP_TEST_RUNNER_TOKEN is not set") {
		t.Errorf("full.hcl without its token: exit %d, %q", r.code, r.stderr)
	}
}

func TestMissingConfigFile(t *testing.T) {
	dir := t.TempDir()
	r := runIn(t, dir, nil, "up", "--auto-approve")
	want := "Error: Cannot read configuration file; open platform.hcl: no such file or directory. Create it (a file with only `provider \"local\" {}` is a complete platform) or pass -c FILE.\n"
	if r.code != exitUsage || r.stderr != want {
		t.Errorf("exit %d, stderr %q; want 2, %q", r.code, r.stderr, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a run without a configuration created %v", entries)
	}
}

// Command-line mistakes exit 2 before anything is touched.
func TestUsageErrors(t *testing.T) {
	cfg := minimalConfig(t)
	list := strings.Join(platform.Names(), ", ")
	for _, tc := range []struct {
		args []string
		want string // stderr
	}{
		{[]string{"up", "--only", "nope"}, `Error: --only: unknown stage "nope"; stages are ` + list + "\n"},
		{[]string{"plan", "--only", "vault,nope"}, `Error: --only: unknown stage "nope"; stages are ` + list + "\n"},
		{[]string{"up", "--skip", "Vault"}, `Error: --skip: unknown stage "Vault"; stages are ` + list + "\n"},
		{[]string{"down", "--from", "start"}, `Error: --from: unknown stage "start"; stages are ` + list + "\n"},
		{[]string{"up", "--only", "vault", "--from", "keys"}, "Error: --only and --from cannot be combined; use --only with the full list\n"},
		{[]string{"up", "--output", "fancy"}, `Error: --output "fancy": use auto, tty, plain or json` + "\n"},
		{[]string{"validate", "--only", "nope"}, `Error: --only: unknown stage "nope"; stages are ` + list + "\n"},
		{[]string{"up", "--no-such-flag"}, "Error: unknown flag: --no-such-flag\n"},
		{[]string{"up", "extra"}, "Error: unknown command \"extra\" for \"bootstrap up\"\n"},
		{[]string{"frobnicate"}, "Error: unknown command \"frobnicate\" for \"bootstrap\"\n"},
		{[]string{"env", "--token", "root"}, `Error: --token "root": use admin, ui or ci-NAMESPACE (e.g. ci-dev)` + "\n"},
		{[]string{"up", "--state-dir"}, "Error: flag needs an argument: --state-dir\n"},
	} {
		state := filepath.Join(t.TempDir(), "state")
		args := append(tc.args, "-c", cfg, "--auto-approve")
		if tc.args[len(tc.args)-1] == "--state-dir" {
			args = append([]string{}, tc.args...)
		} else {
			args = append(args, "--state-dir", state)
		}
		r := runIn(t, filepath.Dir(cfg), nil, args...)
		if r.code != exitUsage || r.stderr != tc.want {
			t.Errorf("%v: exit %d, stderr %q; want 2, %q", tc.args, r.code, r.stderr, tc.want)
		}
		if _, err := os.Stat(state); !os.IsNotExist(err) {
			t.Errorf("%v created the state directory", tc.args)
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(cfg)); len(entries) != 1 {
		t.Errorf("usage errors left files next to the configuration: %v", entries)
	}
}

func TestVersion(t *testing.T) {
	r := runIn(t, t.TempDir(), nil, "version")
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "bootstrap dev\n") || !strings.Contains(r.stdout, "  vault ") || !strings.Contains(r.stdout, "calls itself 1.19.0-dev") ||
		!strings.Contains(r.stdout, "  prom/prometheus:v"+tools.Versions()["PROMETHEUS_VERSION"]+"\n") || r.stderr != "" {
		t.Errorf("version: exit %d, %q, %q", r.code, r.stdout, r.stderr)
	}
}
