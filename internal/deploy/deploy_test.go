package deploy

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	nomadapi "github.com/hashicorp/nomad/api"
)

func TestSubstituteEnv(t *testing.T) {
	src := `job "x" {
  meta {
    commit   = "${CI_COMMIT_SHORT_SHA}"
    image    = "${CI_REGISTRY_IMAGE}/web:${CI_COMMIT_SHORT_SHA}"
    empty    = "[${EMPTY}]"
    unset    = "${NOT_SET_HERE}"
    escaped  = "$${CI_COMMIT_SHORT_SHA}"
    runtime  = "${NOMAD_ALLOC_DIR} ${NOMAD_ADDR}"
    port     = "${NOMAD_PORT_http}"
    hcl      = "${var.image} ${local.x}"
    nomad    = "${attr.kernel.name} ${meta.node_address} ${node.unique.id} ${env.HOME}"
    lower    = "${ci_commit}"
    dollar   = "$CI_COMMIT_SHORT_SHA"
    other    = "${OTHER}"
    token    = "${CI_JOB_TOKEN}"
  }
}
`
	env := []string{"CI_COMMIT_SHORT_SHA=0a1b2c3", "CI_REGISTRY_IMAGE=registry.example/app", "EMPTY=", "NOMAD_ADDR=http://x", "NOMAD_ALLOC_DIR=/tmp", "ci_commit=nope", "HOME=/root", "OTHER=x", "CI_JOB_TOKEN=glcbt-secret-secret"}
	out, sub, err := SubstituteEnv("job.hcl", []byte(src), env, []string{"EMPTY"})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.NewReplacer(
		`"${CI_COMMIT_SHORT_SHA}"`, `"0a1b2c3"`,
		`"${CI_REGISTRY_IMAGE}/web:${CI_COMMIT_SHORT_SHA}"`, `"registry.example/app/web:0a1b2c3"`,
		`"[${EMPTY}]"`, `"[]"`,
	).Replace(src)
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	if !slices.Equal(sub.Substituted, []string{"CI_COMMIT_SHORT_SHA", "CI_REGISTRY_IMAGE", "EMPTY"}) {
		t.Errorf("substituted %v", sub.Substituted)
	}
	if !slices.Equal(sub.Left, []string{"NOMAD_ADDR", "NOMAD_ALLOC_DIR", "NOT_SET_HERE"}) {
		t.Errorf("left %v", sub.Left)
	}
	if !slices.Equal(sub.NotAllowed, []string{"OTHER"}) {
		t.Errorf("not allowed %v", sub.NotAllowed)
	}
	if !slices.Equal(sub.Secret, []string{"CI_JOB_TOKEN"}) {
		t.Errorf("secret %v", sub.Secret)
	}
}

func TestRenderVariablesPrecedence(t *testing.T) {
	dir := t.TempDir()
	hclFile := filepath.Join(dir, "a.vars.hcl")
	os.WriteFile(hclFile, []byte("image = \"from-file\"\ncount = 3\ntags = [\"a\", \"b\"]\n"), 0o644)
	jsonFile := filepath.Join(dir, "b.json")
	os.WriteFile(jsonFile, []byte(`{"count": 4, "region": "eu"}`), 0o644)
	env := []string{"NOMAD_VAR_image=from-env", "NOMAD_VAR_only_env=e", "NOMAD_VAR_=ignored", "OTHER=x"}
	vars, err := RenderVariables(env, []string{hclFile, jsonFile}, []string{"image=from-flag", `list=["x", "y"]`, "text=[not a list"})
	if err != nil {
		t.Fatal(err)
	}
	content, lines := vars.content(10)
	want := strings.Repeat("\n", 9) + `count = 4
image = "from-flag"
list = ["x", "y"]
only_env = "e"
region = "eu"
tags = ["a", "b"]
text = "[not a list"
`
	if content != want {
		t.Errorf("content:\n%q\nwant:\n%q", content, want)
	}
	for line, src := range map[int]string{10: jsonFile + ":1", 11: "--var image", 12: "--var list", 13: "NOMAD_VAR_only_env", 15: hclFile + ":3"} {
		if lines[line] != src {
			t.Errorf("line %d from %q, want %q", line, lines[line], src)
		}
	}
}

func TestRenderVariablesErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte("a = 1\nb = var.x\n"), 0o644)
	block := filepath.Join(dir, "block.hcl")
	os.WriteFile(block, []byte("variable \"a\" {\n}\n"), 0o644)
	for _, c := range []struct {
		files, vars []string
		want        string
	}{
		{[]string{bad}, nil, "bad.hcl:2,"},
		{[]string{block}, nil, "block.hcl:1,"},
		{[]string{filepath.Join(dir, "missing.hcl")}, nil, "missing.hcl: no such file"},
		{nil, []string{"=x"}, "want NAME=VALUE"},
		{nil, []string{"1x=y"}, "want NAME=VALUE"},
	} {
		_, err := RenderVariables(nil, c.files, c.vars)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: %v, want %q", c.files, c.vars, err, c.want)
		}
	}
}

func TestParseErrorPositions(t *testing.T) {
	varLines := map[int]string{12: "--var n", 13: "vars.hcl:7"}
	body := "Failed to parse job: input.hcl:4,13-5,1: Invalid expression; Expected the start of an expression.\ninput.hcl:12,5-11: Invalid value for variable; a number is required.\ninput.hcl:13,1-2: x\ninput.hcl:99: y"
	got := parseError("jobs/web.nomad.hcl", 10, varLines, body).Error()
	want := "jobs/web.nomad.hcl:4,13-5,1: Invalid expression; Expected the start of an expression.\n--var n: Invalid value for variable; a number is required.\nvars.hcl:7: x\njob variables: y"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestImageTag(t *testing.T) {
	for _, c := range []struct {
		ref    string
		tag    string
		pinned bool
	}{
		{"nginx", "", false},
		{"nginx:latest", "latest", false},
		{"nginx:1.27", "1.27", false},
		{"registry.example:5000/team/web", "", false},
		{"registry.example:5000/team/web:0a1b2c3", "0a1b2c3", false},
		{"registry.example/web@sha256:abcd", "", true},
		{"registry.example/web:1.0@sha256:abcd", "", true},
	} {
		tag, pinned := imageTag(c.ref)
		if tag != c.tag || pinned != c.pinned {
			t.Errorf("imageTag(%q) = %q, %v; want %q, %v", c.ref, tag, pinned, c.tag, c.pinned)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func testJob(ns *string, image string, tags ...[]string) *nomadapi.Job {
	task := &nomadapi.Task{Name: "t", Driver: "docker", Config: map[string]any{"image": image}}
	tg := &nomadapi.TaskGroup{Name: ptr("g"), Tasks: []*nomadapi.Task{task}}
	for i, tt := range tags {
		s := &nomadapi.Service{Name: "svc" + string(rune('a'+i)), Tags: tt}
		if i%2 == 0 {
			tg.Services = append(tg.Services, s)
		} else {
			task.Services = append(task.Services, s)
		}
	}
	return &nomadapi.Job{ID: ptr("j"), Namespace: ns, TaskGroups: []*nomadapi.TaskGroup{tg}}
}

func TestGuardRails(t *testing.T) {
	for _, c := range []struct {
		inFile *string
		flag   string
		want   string // error substring; "" for ok
		result string
	}{
		{nil, "", "has no namespace", ""},
		{ptr(""), "", "has no namespace", ""},
		{ptr("dev"), "", "", "dev"},
		{nil, "prod", "", "prod"},
		{ptr("prod"), "prod", "", "prod"},
		{ptr("dev"), "prod", `says namespace = "dev" but --namespace is "prod"`, ""},
		{ptr("general"), "", "platform's own jobs", ""},
		{nil, "general", "platform's own jobs", ""},
		{ptr("default"), "", "not an application namespace", ""},
	} {
		job := testJob(c.inFile, "x:1")
		err := settleNamespace(job, c.flag)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v/%q: %v", c.inFile, c.flag, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v/%q: %v, want %q", c.inFile, c.flag, err, c.want)
		case c.want == "" && *job.Namespace != c.result:
			t.Errorf("%v/%q: namespace %q, want %q", c.inFile, c.flag, *job.Namespace, c.result)
		}
	}

	if err := checkImages(testJob(nil, "registry.example/web:0a1b2c3")); err != nil {
		t.Errorf("tagged image refused: %v", err)
	}
	raw := testJob(nil, "")
	raw.TaskGroups[0].Tasks[0].Config = map[string]any{"command": "/bin/true"}
	if err := checkImages(raw); err != nil {
		t.Errorf("a task without an image refused: %v", err)
	}
	for _, img := range []string{"web", "web:latest", "registry.example:5000/web"} {
		if err := checkImages(testJob(nil, img)); err == nil {
			t.Errorf("%q accepted", img)
		}
	}

	w := metricsWarnings(testJob(nil, "x:1", []string{"prometheus"}, []string{"urlprefix-/a"}, nil, []string{"prometheus", "x"}))
	if len(w) != 2 || !strings.Contains(w[0], `service "svcc" (group "g")`) || !strings.Contains(w[1], `service "svcb" (task "t" of group "g")`) {
		t.Errorf("warnings %q", w)
	}
}

func TestClientNeedsAddress(t *testing.T) {
	_, err := Client([]string{"NOMAD_TOKEN=x"})
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "NOMAD_ADDR is not set") {
		t.Errorf("%v", err)
	}
	_, err = Client([]string{"NOMAD_ADDR=https://127.0.0.1:4646", "NOMAD_CACERT=/nonexistent/ca.pem"})
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "NOMAD_CACERT") {
		t.Errorf("%v", err)
	}
	c, err := Client([]string{"NOMAD_ADDR=https://127.0.0.1:4646"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Address() != "https://127.0.0.1:4646" {
		t.Errorf("address %q", c.Address())
	}
}

func TestCheckServiceNames(t *testing.T) {
	job := testJob(nil, "registry.example/web:1", nil)
	job.TaskGroups[0].Services[0].Name = "dev-web"
	if err := checkServiceNames(job, "dev"); err != nil {
		t.Errorf("dev-web in dev: %v", err)
	}
	for _, bad := range []string{"web", "grafana", "prod-web", "devweb"} {
		job.TaskGroups[0].Services[0].Name = bad
		err := checkServiceNames(job, "dev")
		if err == nil || !strings.Contains(err.Error(), `must start with "dev-"`) {
			t.Errorf("service %q in dev: %v", bad, err)
		}
	}
	// Nomad's own service catalog is per namespace already.
	job.TaskGroups[0].Services[0].Provider = "nomad"
	if err := checkServiceNames(job, "dev"); err != nil {
		t.Errorf("a nomad-provider service: %v", err)
	}
}
