package deploy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// ciEnv is a GitLab job's environment: build identifiers, credentials,
// and a project variable.
var ciEnv = []string{
	"CI_COMMIT_SHORT_SHA=0a1b2c3d",
	"CI_REGISTRY_IMAGE=registry.example/shop",
	"CI_JOB_TOKEN=glcbt-64_jobtokenjobtokenjobtoken",
	"CI_REGISTRY_PASSWORD=registrypassword-123",
	"CI_REPOSITORY_URL=https://gitlab-ci-token:glcbt-64_jobtokenjobtokenjobtoken@gitlab.example/shop.git",
	"DATABASE_PASSWORD=db-password-456",
	"FOO=foo-value",
}

func TestSubstituteAllowList(t *testing.T) {
	src := `job "shop" {
  meta {
    commit   = "${CI_COMMIT_SHORT_SHA}"
    image    = "${CI_REGISTRY_IMAGE}:${CI_COMMIT_SHORT_SHA}"
    token    = "${CI_JOB_TOKEN}"
    registry = "${CI_REGISTRY_PASSWORD}"
    repo     = "${CI_REPOSITORY_URL}"
    db       = "${DATABASE_PASSWORD}"
    foo      = "${FOO}"
  }
}
`
	for _, c := range []struct {
		names      []string
		foo        string
		notAllowed []string
	}{
		{nil, "${FOO}", []string{"FOO"}},
		{[]string{"FOO"}, "foo-value", nil},
	} {
		out, sub, err := SubstituteEnv("job.hcl", []byte(src), ciEnv, c.names)
		if err != nil {
			t.Fatal(err)
		}
		meta := parseMeta(t, out)
		want := map[string]string{
			"commit":   "0a1b2c3d",
			"image":    "registry.example/shop:0a1b2c3d",
			"token":    "${CI_JOB_TOKEN}",
			"registry": "${CI_REGISTRY_PASSWORD}",
			"repo":     "${CI_REPOSITORY_URL}",
			"db":       "${DATABASE_PASSWORD}",
			"foo":      c.foo,
		}
		for k, v := range want {
			if meta[k] != v {
				t.Errorf("--env %v: meta.%s = %q, want %q", c.names, k, meta[k], v)
			}
		}
		for _, kv := range ciEnv {
			if _, v, _ := strings.Cut(kv, "="); IsSecretName(strings.SplitN(kv, "=", 2)[0]) && strings.Contains(string(out), v) {
				t.Errorf("--env %v: the job holds the secret %q:\n%s", c.names, v, out)
			}
		}
		if !slices.Equal(sub.NotAllowed, c.notAllowed) {
			t.Errorf("--env %v: not allowed %v, want %v", c.names, sub.NotAllowed, c.notAllowed)
		}
		if want := []string{"CI_JOB_TOKEN", "CI_REGISTRY_PASSWORD", "CI_REPOSITORY_URL", "DATABASE_PASSWORD"}; !slices.Equal(sub.Secret, want) {
			t.Errorf("--env %v: secret %v, want %v", c.names, sub.Secret, want)
		}
	}
}

// parseMeta parses a substituted job with HCL (no variables: every
// ${NAME} left for Nomad is read as its literal text, as Nomad does) and
// returns its meta block.
func parseMeta(t *testing.T, src []byte) map[string]string {
	t.Helper()
	f, diags := hclsyntax.ParseConfig(src, "job.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%s\n%s", diags, src)
	}
	job := f.Body.(*hclsyntax.Body).Blocks[0]
	var meta *hclsyntax.Block
	for _, b := range job.Body.Blocks {
		if b.Type == "meta" {
			meta = b
		}
	}
	out := map[string]string{}
	for name, a := range meta.Body.Attributes {
		v, diags := a.Expr.Value(keepUnknown(a.Expr))
		if diags.HasErrors() {
			t.Fatalf("meta.%s: %s", name, diags)
		}
		out[name] = v.AsString()
	}
	return out
}

// keepUnknown binds every variable the expression refers to to its own
// "${NAME}" text, the way Nomad leaves names it does not know for run
// time.
func keepUnknown(expr hcl.Expression) *hcl.EvalContext {
	vars := map[string]cty.Value{}
	for _, tr := range expr.Variables() {
		vars[tr.RootName()] = cty.StringVal("${" + tr.RootName() + "}")
	}
	return &hcl.EvalContext{Variables: vars}
}

func TestCheckEnvName(t *testing.T) {
	for _, c := range []struct {
		name, want string // want: error substring, "" for accepted
	}{
		{"FOO", ""},
		{"APP_VERSION", ""},
		{"CI_COMMIT_AUTHOR", ""},
		{"CI_JOB_TOKEN", `looks like a secret (its name contains "TOKEN")`},
		{"CI_REGISTRY_PASSWORD", `"PASSWORD"`},
		{"CI_JOB_JWT_V2", `"JWT"`},
		{"AWS_SECRET_ACCESS_KEY", `"SECRET"`},
		{"API_KEY", `"KEY"`},
		{"DOCKER_AUTH_CONFIG", `"AUTH"`},
		{"DB_PASS", `"PASS"`},
		{"CI_REGISTRY_USER", "holds a credential"},
		{"CI_REPOSITORY_URL", "holds a credential"},
		{"NOMAD_TOKEN", "Nomad's runtime variables"},
		{"NOMAD_ADDR", "Nomad's runtime variables"},
		{"foo", "want an upper-case NAME"},
		{"FOO=bar", "want an upper-case NAME"},
		{"", "want an upper-case NAME"},
	} {
		err := CheckEnvName(c.name)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("--env %s refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("--env %s: %v, want %q", c.name, err, c.want)
		}
	}
	for _, n := range BuildVars {
		if err := CheckEnvName(n); err != nil {
			t.Errorf("build identifier %s: %v", n, err)
		}
	}
	if _, _, err := SubstituteEnv("job.hcl", []byte(`a = "${CI_JOB_TOKEN}"`), ciEnv, []string{"CI_JOB_TOKEN"}); err == nil {
		t.Error("SubstituteEnv took --env CI_JOB_TOKEN")
	}
}

// TestRunRefusesSecretEnv: --env of a secret is bad input (exit 2),
// refused before the job file or Nomad is looked at.
func TestRunRefusesSecretEnv(t *testing.T) {
	_, err := Run(context.Background(), Options{JobFile: "/nonexistent/job.hcl", EnvNames: []string{"FOO", "CI_JOB_TOKEN"}, Env: ciEnv})
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "--env CI_JOB_TOKEN: refused") {
		t.Errorf("%v, want an InputError refusing --env CI_JOB_TOKEN", err)
	}
}

func TestSubstituteEscaping(t *testing.T) {
	values := []string{
		`a "quoted" value`,
		`back\slash \n \" \\`,
		"two\nlines\r\n\ttabbed \x01",
		`${env.SECRET} ${var.x} ${CI_JOB_TOKEN}`,
		`%{ if true }directive%{ endif }`,
		`x" } job "evil" { y = "`,
		"x\"\n}\njob \"evil\" {\n  z = \"",
		"EOT\n  evil = 1\nEOT",
		`trailing $`,
		`trailing %`,
		`{leading brace}`,
		`$${` + `escaped} %%{x}`,
		`ünïcödé ✓`,
		``,
	}
	for _, v := range values {
		env := []string{"V=" + v}
		// A value in an attribute, in a block's label, in a heredoc, and
		// next to text and other values that must not combine with it.
		src := `job "${V}" {
  meta {
    plain = "${V}"
    text  = "%${V}{a}$${V}"
    twice = "${V}${V}"
    doc   = <<EOT
${V}
EOT
  }
}
`
		out, _, err := SubstituteEnv("job.hcl", []byte(src), env, []string{"V"})
		if err != nil {
			t.Fatalf("%q: %v", v, err)
		}
		f, diags := hclsyntax.ParseConfig(out, "job.hcl", hcl.InitialPos)
		if diags.HasErrors() {
			t.Errorf("%q: %s\n%s", v, diags, out)
			continue
		}
		body := f.Body.(*hclsyntax.Body)
		if len(body.Blocks) != 1 || len(body.Blocks[0].Body.Blocks) != 1 || len(body.Blocks[0].Body.Attributes) != 0 {
			t.Errorf("%q: the value changed the job's structure:\n%s", v, out)
			continue
		}
		if got := body.Blocks[0].Labels[0]; got != v {
			t.Errorf("%q: label %q", v, got)
		}
		meta := parseMeta(t, out)
		want := map[string]string{"plain": v, "text": "%" + v + "{a}${V}", "twice": v + v, "doc": v + "\n"}
		if len(meta) != len(want) {
			t.Errorf("%q: meta %q, want %q", v, meta, want)
		}
		for k, w := range want {
			if meta[k] != w {
				t.Errorf("%q: meta.%s = %q, want %q\n%s", v, k, meta[k], w, out)
			}
		}
		if lines := strings.Count(string(out), "\n"); lines != strings.Count(src, "\n") {
			t.Errorf("%q: %d lines, want the file's %d", v, lines, strings.Count(src, "\n"))
		}
	}
}

// TestSubstituteEscapingExhaustive checks every value of up to three
// characters that matter to HCL: substituting it must mean exactly what
// binding ${V} to it as a variable means, in a quoted string, a heredoc and
// a label, next to the characters that could combine with it.
func TestSubstituteEscapingExhaustive(t *testing.T) {
	alphabet := []string{"$", "%", "{", "}", `"`, `\`, "\n", "a", "~"}
	values := []string{""}
	for n, prev := 0, []string{""}; n < 3; n++ {
		var next []string
		for _, p := range prev {
			for _, c := range alphabet {
				next = append(next, p+c)
			}
		}
		values = append(values, next...)
		prev = next
	}
	for _, v := range values {
		for _, pre := range []string{"", "a", "%", `\\`} {
			for _, post := range []string{"", "a", "{", "{a}", "$", "%"} {
				for _, kind := range []string{"quoted", "heredoc", "label"} {
					var tmpl string
					switch kind {
					case "quoted", "label":
						tmpl = `"` + pre + "${V}" + post + `"`
					case "heredoc":
						tmpl = "<<EOT\n" + pre + "${V}" + post + "\nEOT\n"
					}
					want := evalTemplate(t, tmpl, v)
					src := "a = " + tmpl + "\n"
					if kind == "label" {
						src = "b " + tmpl + " {}\n"
					}
					out, sub, err := SubstituteEnv("job.hcl", []byte(src), []string{"V=" + v}, []string{"V"})
					if err != nil || len(sub.Substituted) != 1 {
						t.Fatalf("%q in %s: %v %+v", v, src, err, sub)
					}
					f, diags := hclsyntax.ParseConfig(out, "job.hcl", hcl.InitialPos)
					if diags.HasErrors() {
						t.Fatalf("%q in %q → %q: %s", v, src, out, diags)
					}
					body := f.Body.(*hclsyntax.Body)
					var got string
					if kind == "label" {
						got = body.Blocks[0].Labels[0]
					} else {
						val, diags := body.Attributes["a"].Expr.Value(nil)
						if diags.HasErrors() {
							t.Fatalf("%q in %q → %q: %s", v, src, out, diags)
						}
						got = val.AsString()
					}
					if got != want {
						t.Fatalf("%q in %q → %q: got %q, want %q", v, src, out, got, want)
					}
				}
			}
		}
	}
}

// evalTemplate returns what the template means with V bound to v.
func evalTemplate(t *testing.T, tmpl, v string) string {
	t.Helper()
	expr, diags := hclsyntax.ParseExpression([]byte(tmpl), "t", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%q: %s", tmpl, diags)
	}
	val, diags := expr.Value(&hcl.EvalContext{Variables: map[string]cty.Value{"V": cty.StringVal(v)}})
	if diags.HasErrors() {
		t.Fatalf("%q: %s", tmpl, diags)
	}
	return val.AsString()
}

func TestSubstituteOutsideString(t *testing.T) {
	src := `# ${CI_COMMIT_SHORT_SHA} in a comment is left alone
job "x" {
  /* so is ${CI_REGISTRY_IMAGE} here */
  group "g" {
    count = ${REPLICAS}
    meta {
      a = "${CI_COMMIT_SHORT_SHA}" // and ${CI_COMMIT_SHORT_SHA}
      b = "$${CI_COMMIT_SHORT_SHA}"
      c = upper(${CI_COMMIT_SHORT_SHA})
    }
  }
}
`
	_, _, err := SubstituteEnv("web.nomad.hcl", []byte(src), append(ciEnv, "REPLICAS=2"), []string{"REPLICAS"})
	if err == nil {
		t.Fatal("${NAME} outside a string was accepted")
	}
	for _, want := range []string{"web.nomad.hcl:5: ${REPLICAS} is outside a quoted string", "web.nomad.hcl:9: ${CI_COMMIT_SHORT_SHA} is outside"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Count(err.Error(), "is outside") != 2 {
		t.Errorf("want two places:\n%v", err)
	}

	// Without them, the comments and the escape are kept as they are.
	src = strings.NewReplacer("${REPLICAS}", "2", "upper(${CI_COMMIT_SHORT_SHA})", `"c"`).Replace(src)
	out, sub, err := SubstituteEnv("web.nomad.hcl", []byte(src), ciEnv, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(src, `a = "${CI_COMMIT_SHORT_SHA}"`, `a = "0a1b2c3d"`, 1)
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	if !slices.Equal(sub.Substituted, []string{"CI_COMMIT_SHORT_SHA"}) {
		t.Errorf("substituted %v", sub.Substituted)
	}
}

func TestSubstituteInvalidUTF8(t *testing.T) {
	_, _, err := SubstituteEnv("job.hcl", []byte("a = 1\nb = \"${V}\"\n"), []string{"V=\xff"}, []string{"V"})
	if err == nil || !strings.Contains(err.Error(), "job.hcl:2: ${V}: the value is not valid UTF-8") {
		t.Errorf("%v", err)
	}
}

func ExampleSubstituteEnv() {
	src := `meta {
  image = "${CI_REGISTRY_IMAGE}:${CI_COMMIT_SHORT_SHA}"
  note  = "${NOTE}"
  token = "${CI_JOB_TOKEN}"
}
`
	env := []string{"CI_REGISTRY_IMAGE=registry.example/shop", "CI_COMMIT_SHORT_SHA=0a1b2c3d", `NOTE=say "hi" ${x}`, "CI_JOB_TOKEN=glcbt-64_secret"}
	out, sub, err := SubstituteEnv("job.hcl", []byte(src), env, []string{"NOTE"})
	if err != nil {
		panic(err)
	}
	fmt.Print(string(out))
	fmt.Println(sub.Substituted, sub.Secret)
	// Output:
	// meta {
	//   image = "registry.example/shop:0a1b2c3d"
	//   note  = "say \"hi\" $${x}"
	//   token = "${CI_JOB_TOKEN}"
	// }
	// [CI_COMMIT_SHORT_SHA CI_REGISTRY_IMAGE NOTE] [CI_JOB_TOKEN]
}
