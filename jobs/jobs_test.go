package jobs

import (
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"

	"github.com/platform-bootstrap/bootstrap/monitoring"
)

func TestFiles(t *testing.T) {
	want := []string{Fabio, GitLabRunner, Grafana, NodeExporter, Prometheus}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("jobs %v, want %v", got, want)
	}
	varRe := regexp.MustCompile(`(?m)^variable "([a-z_]+)"`)
	for name, src := range Files() {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(src, "job \""+name+"\" {") {
				t.Errorf("the file does not hold job %q", name)
			}
			if !strings.Contains(src, `namespace   = "general"`) {
				t.Error("not in the general namespace")
			}
			// Every variable is documented in the comment at the top.
			header := src[:strings.Index(src, "\nvariable ")]
			for _, m := range varRe.FindAllStringSubmatch(src, -1) {
				if !regexp.MustCompile(`(?m)^#.*\b` + m[1] + `\b`).MatchString(header) {
					t.Errorf("variable %s is not documented at the top of the file", m[1])
				}
			}
			for _, v := range []string{"datacenters", "driver", "image", "binary", "cpu", "memory"} {
				if !strings.Contains(src, `variable "`+v+`"`) {
					t.Errorf("no variable %s", v)
				}
			}
			// Secrets come from Vault, never from a variable.
			if regexp.MustCompile(`variable "[a-z_]*(token|password|secret)[a-z_]*"`).MatchString(src) {
				t.Error("a secret is taken as a variable")
			}
		})
	}
	if _, err := File("nope"); err == nil || !strings.Contains(err.Error(), "fabio") {
		t.Errorf("File(nope): %v", err)
	}
}

// The encoded variables read back as the same values: "${" and "%{" in
// Grafana's provisioning files, quotes, backslashes and newlines survive.
func TestVariablesEncode(t *testing.T) {
	in := Variables{
		"text":   "url: ${PROMETHEUS_URL}\n%{ if x }\t\"quoted\" \\ back\n",
		"list":   []string{"dc1", "${x}"},
		"empty":  []string{},
		"map":    map[string]string{"a.yml": "{{ $labels.instance }}", "b.json": `{"x": "$y"}`},
		"bytes":  map[string][]byte{"c": []byte("c")},
		"number": 3,
		"flag":   true,
	}
	src, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclsyntax.ParseConfig([]byte(src), "vars.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("%s\n%s", diags, src)
	}
	attrs, _ := f.Body.JustAttributes()
	get := func(name string, target any) {
		t.Helper()
		v, diags := attrs[name].Expr.Value(nil)
		if diags.HasErrors() {
			t.Fatalf("%s: %s", name, diags)
		}
		ty, err := gocty.ImpliedType(target)
		if err != nil {
			t.Fatal(err)
		}
		// HCL reads [..] and {..} as tuples and objects, which Nomad
		// converts to the variable's declared type the same way.
		if v, err = convert.Convert(v, ty); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := gocty.FromCtyValue(v, target); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var text string
	get("text", &text)
	if text != in["text"] {
		t.Errorf("text = %q", text)
	}
	var list []string
	get("list", &list)
	if !slices.Equal(list, in["list"].([]string)) {
		t.Errorf("list = %q", list)
	}
	var m map[string]string
	get("map", &m)
	if !maps.Equal(m, in["map"].(map[string]string)) {
		t.Errorf("map = %q", m)
	}
	var n int
	get("number", &n)
	var b bool
	get("flag", &b)
	if n != 3 || !b {
		t.Errorf("number %d, flag %v", n, b)
	}
	if v, _ := attrs["empty"].Expr.Value(nil); v.LengthInt() != 0 || !v.Type().IsTupleType() && !v.Type().IsListType() {
		t.Errorf("empty = %#v", v)
	}
	if _, err := (Variables{"x": struct{}{}}).Encode(); err == nil {
		t.Error("an unsupported type was encoded")
	}
}

// Everything the monitoring package renders can go through the jobs'
// template stanzas untouched, and the jobs do use those delimiters.
func TestMonitoringTextFitsTemplates(t *testing.T) {
	texts := map[string]string{
		"datasources.yml": string(monitoring.GrafanaDatasources()),
		"dashboards.yml":  string(monitoring.GrafanaDashboardProvider()),
	}
	for n, b := range monitoring.Dashboards() {
		texts[n] = string(b)
	}
	rules, err := monitoring.RenderRules(monitoring.RulesConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for n, b := range rules {
		texts[n] = string(b)
	}
	for name, text := range texts {
		if err := CheckTemplateText(name, text); err != nil {
			t.Error(err)
		}
	}
	if err := CheckTemplateText("x", "a "+TemplateLeftDelim+" b"); err == nil {
		t.Error("a text with the delimiter passed")
	}
	for _, name := range []string{Prometheus, Grafana} {
		src, _ := File(name)
		if !strings.Contains(src, `ldelim = "`+TemplateLeftDelim+`"`) || !strings.Contains(src, `rdelim = "`+TemplateRightDelim+`"`) {
			t.Errorf("%s does not use the delimiters of this package", name)
		}
	}
}

// The files the prometheus job writes are where prometheus.yml looks.
func TestPrometheusFilesMatchJob(t *testing.T) {
	src, _ := File(Prometheus)
	for _, f := range []string{PrometheusConsulTokenFile, PrometheusNomadTokenFile} {
		base := strings.TrimPrefix(f, "../secrets/")
		name := strings.TrimSuffix(base, ".token")
		if !strings.Contains(src, name+` = "`+name+`"`) || !strings.Contains(src, `destination   = "secrets/${template.key}.token"`) {
			t.Errorf("the job does not write %s", f)
		}
	}
	if !strings.Contains(src, `destination     = "local/prometheus.yml"`) || !strings.Contains(src, `destination     = "local/ca/${template.key}.pem"`) ||
		PrometheusCAFile("consul") != "ca/consul.pem" {
		t.Error("prometheus.yml or the CA files moved")
	}
}
