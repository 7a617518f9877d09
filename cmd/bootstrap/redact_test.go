package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/stages"
)

// echoStage prints the given values every way a stage can, as a provider
// that echoes its credentials in an error would.
type echoStage []string

func (echoStage) Name() string { return "echo" }

func (s echoStage) Plan(_ context.Context, e *stages.Env) ([]stages.Change, error) {
	if e.State.Output("echoed") != "" {
		return nil, nil
	}
	return []stages.Change{{Action: "echo", Target: strings.Join(s, " ")}}, nil
}

func (s echoStage) Apply(_ context.Context, e *stages.Env) error {
	for _, v := range s {
		e.Step("value %s", v)
		e.Logf("log: %s", v)
		fmt.Fprintf(e.Log, "subprocess output with %s\n", v)
	}
	return e.State.SetOutput("echoed", "yes")
}

// The credentials in the environment and the values the configuration reads
// with env() and file() are redacted from everything a run prints and
// records, as they are and base64-encoded.
func TestConfigAndEnvSecretsNeverPrinted(t *testing.T) {
	creds := map[string]string{
		"DIGITALOCEAN_TOKEN": "dop_v1_5f0c8a1e2b3d4c5e6f708192a3b4c5d6",
		"HCLOUD_TOKEN":       "hcloud-9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c",
		"TF_HTTP_PASSWORD":   "tf-backend-password-81f2",
	}
	for k, v := range creds {
		t.Setenv(k, v)
	}
	const (
		runnerToken = "glrt-runner-token-from-env-4c1d"
		fromFile    = "common-name-from-a-file-77ab"
	)
	t.Setenv("BOOTSTRAP_TEST_RUNNER_TOKEN", runnerToken)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "platform.hcl")
	src := `provider "local" {}

pki {
  ca "apps" {
    common_name = file("cn.txt")
  }
}

gitlab_runner {
  url   = "https://gitlab.example.com"
  token = env("BOOTSTRAP_TEST_RUNNER_TOKEN")
}
`
	if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cn.txt"), []byte(fromFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var secretValues []string
	for _, v := range creds {
		secretValues = append(secretValues, v)
	}
	secretValues = append(secretValues, runnerToken, fromFile)
	var printed []string
	for _, v := range secretValues {
		printed = append(printed, v, base64.StdEncoding.EncodeToString([]byte(v)))
	}

	for _, mode := range []string{"plain", "json"} {
		t.Run(mode, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			stdout, stderr, code := execute(t, mode, cfg, state, echoStage(printed))
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			want := "value <redacted>"
			if mode == "json" {
				want = `value \u003credacted\u003e`
			}
			if !strings.Contains(stdout, want) {
				t.Errorf("stdout lacks the redacted values:\n%s", stdout)
			}
			places := map[string]string{"stdout": stdout, "stderr": stderr}
			filepath.WalkDir(state, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && !strings.HasPrefix(p, filepath.Join(state, "secrets")) {
					b, _ := os.ReadFile(p)
					places[p] = string(b)
				}
				return nil
			})
			for where, text := range places {
				for _, v := range printed {
					if strings.Contains(text, v) {
						t.Errorf("%s is in %s:\n%s", v, where, text)
					}
				}
			}
		})
	}
}
