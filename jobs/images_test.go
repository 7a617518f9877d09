package jobs

import (
	"maps"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/platform-bootstrap/bootstrap/tools"
)

// Each job file's image defaults are the images tools/versions.env names
// (Images): a version changed in one place and not the other fails here,
// so that `nomad job run` of a file runs what the jobs stage would.
func TestImageDefaults(t *testing.T) {
	images := Images(tools.Versions())
	// Every tag is a whole version: a key missing from versions.env
	// would leave "prom/prometheus:v".
	tag := regexp.MustCompile(`:(alpine-)?v?[0-9]+\.[0-9]+\.[0-9]+$`)
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			src, err := File(name)
			if err != nil {
				t.Fatal(err)
			}
			got := imageDefaults(t, name, src)
			want := images[name]
			if !maps.Equal(got, want) {
				t.Errorf("the file's image defaults are %v, tools/versions.env gives %v", got, want)
			}
			for v, image := range want {
				if !tag.MatchString(image) {
					t.Errorf("%s = %q has no version", v, image)
				}
			}
		})
	}
}

// imageDefaults returns the defaults of the job file's image variables:
// image and <group>_image. The GitLab Runner's job_image is the default
// image of the CI jobs it runs, not one of the platform's.
func imageDefaults(t *testing.T, name, src string) map[string]string {
	t.Helper()
	f, diags := hclsyntax.ParseConfig([]byte(src), name+".nomad.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	out := map[string]string{}
	for _, b := range f.Body.(*hclsyntax.Body).Blocks {
		if b.Type != "variable" || len(b.Labels) != 1 {
			continue
		}
		v := b.Labels[0]
		if v != "image" && !strings.HasSuffix(v, "_image") || name == GitLabRunner && v == "job_image" {
			continue
		}
		def, ok := b.Body.Attributes["default"]
		if !ok {
			t.Errorf("variable %s has no default", v)
			continue
		}
		val, diags := def.Expr.Value(nil)
		if diags.HasErrors() || !val.Type().Equals(cty.String) {
			t.Errorf("variable %s: the default is not a literal string: %s", v, diags)
			continue
		}
		out[v] = val.AsString()
	}
	return out
}
