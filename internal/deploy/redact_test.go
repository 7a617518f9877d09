package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/secrets"
)

// Secrets of the CI job, as a task that prints its environment, a job
// that hard-codes one, or a server error could echo them back.
const (
	nomadToken   = "5f0c1d2e-3b4a-4c5d-8e9f-0a1b2c3d4e5f"
	jobToken     = "glcbt-64_jobtokenjobtokenjobtoken"
	registryPass = "registrypassword-123"
	projSecret   = "-----BEGIN KEY-----\nline-one-of-the-key\nline-two-of-the-key\n-----END KEY-----"
)

// fakeNomad answers the calls of a --plan-only deploy; planStatus other
// than 200 fails the plan with a body that quotes the token.
func fakeNomad(t *testing.T, planStatus int) *httptest.Server {
	t.Helper()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/namespaces", func(w http.ResponseWriter, r *http.Request) {
		reply(w, []map[string]string{{"Name": "dev"}})
	})
	mux.HandleFunc("/v1/jobs/parse", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{
			"ID": "shop", "Name": "shop", "Namespace": "dev", "Type": "service",
			"Meta": map[string]string{"commit": "0a1b2c3d"},
			"TaskGroups": []map[string]any{{
				"Name":  "web",
				"Tasks": []map[string]any{{"Name": "web", "Driver": "raw_exec", "Config": map[string]any{"command": "/bin/true"}}},
			}},
		})
	})
	mux.HandleFunc("/v1/validate/job", func(w http.ResponseWriter, r *http.Request) {
		reply(w, map[string]any{"DriverConfigValidated": true, "Warnings": "the task's env holds " + registryPass})
	})
	mux.HandleFunc("/v1/job/shop/plan", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Nomad-Token") != nomadToken {
			t.Errorf("plan with token %q", r.Header.Get("X-Nomad-Token"))
		}
		if planStatus != http.StatusOK {
			http.Error(w, "ACL token "+nomadToken+" lacks submit-job", planStatus)
			return
		}
		reply(w, map[string]any{
			"JobModifyIndex": 7,
			"Diff": map[string]any{"Type": "Edited", "ID": "shop", "Fields": []map[string]string{
				{"Type": "Edited", "Name": "Meta[token]", "Old": jobToken, "New": "https://gitlab-ci-token:" + jobToken + "@gitlab.example"},
				{"Type": "Added", "Name": "Meta[key]", "New": projSecret},
				{"Type": "Edited", "Name": "Meta[commit]", "Old": "1111111", "New": "0a1b2c3d"},
			}},
		})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func redactEnv(addr string) []string {
	return []string{
		"NOMAD_ADDR=" + addr,
		"NOMAD_TOKEN=" + nomadToken,
		"CI_JOB_TOKEN=" + jobToken,
		"CI_REGISTRY_PASSWORD=" + registryPass,
		"SIGNING_KEY=" + projSecret,
		"CI_COMMIT_SHORT_SHA=0a1b2c3d",
	}
}

// wantNoSecrets fails when s holds a secret, whole or a line of one.
func wantNoSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, v := range []string{nomadToken, jobToken, registryPass, projSecret, "line-one-of-the-key", "line-two-of-the-key"} {
		if strings.Contains(s, v) {
			t.Errorf("%s holds the secret %q:\n%s", what, v, s)
		}
	}
}

func TestRunRedactsOutput(t *testing.T) {
	srv := fakeNomad(t, http.StatusOK)
	job := filepath.Join(t.TempDir(), "shop.nomad.hcl")
	os.WriteFile(job, []byte("job \"shop\" {\n  meta {\n    commit = \"${CI_COMMIT_SHORT_SHA}\"\n    token  = \"${CI_JOB_TOKEN}\"\n  }\n}\n"), 0o644)
	var out bytes.Buffer
	res, err := Run(context.Background(), Options{JobFile: job, PlanOnly: true, Env: redactEnv(srv.URL), Out: &out})
	if err != nil {
		t.Fatalf("%v\n%s", err, &out)
	}
	if !res.Changes {
		t.Error("no changes")
	}
	t.Logf("output:\n%s", &out)
	wantNoSecrets(t, "the output", out.String())
	for _, want := range []string{
		`Meta[token]: "` + secrets.Redacted + `" => "https://gitlab-ci-token:` + secrets.Redacted + `@gitlab.example"`,
		`Meta[commit]: "1111111" => "0a1b2c3d"`,
		"validate: warnings: the task's env holds " + secrets.Redacted,
		"substituted from the environment: CI_COMMIT_SHORT_SHA",
		"(secret-looking names are never substituted): CI_JOB_TOKEN",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestRunRedactsErrors(t *testing.T) {
	srv := fakeNomad(t, http.StatusInternalServerError)
	job := filepath.Join(t.TempDir(), "shop.nomad.hcl")
	os.WriteFile(job, []byte("job \"shop\" {}\n"), 0o644)
	var out bytes.Buffer
	_, err := Run(context.Background(), Options{JobFile: job, PlanOnly: true, Env: redactEnv(srv.URL), Out: &out})
	if err == nil || !strings.Contains(err.Error(), "ACL token "+secrets.Redacted+" lacks submit-job") {
		t.Fatalf("%v, want the plan's error with the token redacted", err)
	}
	wantNoSecrets(t, "the error", err.Error())
	wantNoSecrets(t, "the output", out.String())
}

func TestRedactErrorKeepsType(t *testing.T) {
	r := secrets.NewRedactor()
	r.Add(jobToken)
	in := redactError(badInput("job.hcl:3: %s", jobToken), r)
	var ie *InputError
	if !errors.As(in, &ie) || strings.Contains(ie.Error(), jobToken) || !strings.Contains(ie.Error(), "job.hcl:3: "+secrets.Redacted) {
		t.Errorf("input error %v (as %v)", in, ie)
	}
	failed := redactError(fmt.Errorf("%w: token %s", ErrFailed, jobToken), r)
	if !errors.Is(failed, ErrFailed) || errors.As(failed, &ie) || strings.Contains(failed.Error(), jobToken) {
		t.Errorf("failed %v", failed)
	}
	if redactError(nil, r) != nil {
		t.Error("nil error redacted to non-nil")
	}
}
