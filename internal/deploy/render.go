package deploy

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/hashicorp/hcl/v2/json"
	"github.com/zclconf/go-cty/cty"
)

// envRef matches ${NAME} with an upper-case shell-style name, optionally
// preceded by one more "$" (HCL's escape: "$${X}" is the literal "${X}").
var envRef = regexp.MustCompile(`\$?\$\{([A-Z_][A-Z0-9_]*)\}`)

// Substitution is what SubstituteEnv did.
type Substitution struct {
	Substituted []string // names replaced by their value, sorted
	Left        []string // upper-case names not set here, left for Nomad, sorted
}

// SubstituteEnv replaces ${NAME} in a job file with the value of the
// environment variable NAME, like `envsubst` in the dissertation's pipeline
// (listing 5.7), so that job files written for that pipeline deploy
// unchanged. The rule that lets it live next to HCL2 and Nomad's own
// interpolation:
//
//   - only ${NAME} where NAME is upper case letters, digits and "_"
//     (${var.x}, ${local.x}, ${attr.x}, ${meta.x}, ${node.x}, ${env.x} and
//     ${NOMAD_PORT_http} all contain a "." or a lower-case letter and are
//     never touched);
//   - only when NAME is set in the environment (even to ""), like envsubst;
//     anything else stays for Nomad, which interpolates it at run time from
//     the task's environment;
//   - never NAME starting with NOMAD_: those are Nomad's runtime variables
//     (NOMAD_ALLOC_DIR, NOMAD_TASK_NAME, …) even when this process has one
//     set, e.g. NOMAD_ADDR;
//   - never "$${NAME}": that is HCL's escape for a literal "${NAME}" and is
//     how a job asks for runtime interpolation of a name that the CI
//     environment also has.
//
// Values are inserted verbatim, as envsubst does: use this for image tags,
// commit hashes and registry paths; pass anything that may hold quotes or
// newlines as an HCL2 variable (--var, NOMAD_VAR_x), which is typed and
// needs no escaping.
func SubstituteEnv(src []byte, env []string) ([]byte, Substitution) {
	vals := envMap(env)
	done, left := map[string]bool{}, map[string]bool{}
	out := envRef.ReplaceAllFunc(src, func(m []byte) []byte {
		if m[1] == '$' { // "$${NAME}": escaped
			return m
		}
		name := string(envRef.FindSubmatch(m)[1])
		v, ok := vals[name]
		if !ok || strings.HasPrefix(name, "NOMAD_") {
			left[name] = true
			return m
		}
		done[name] = true
		return []byte(v)
	})
	return out, Substitution{Substituted: slices.Sorted(maps.Keys(done)), Left: slices.Sorted(maps.Keys(left))}
}

func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// varEnvPrefix is how the nomad CLI takes job variables from the
// environment.
const varEnvPrefix = "NOMAD_VAR_"

// variable is one job variable value and where it came from.
type variable struct {
	name   string
	value  cty.Value
	source string // "--var port", "vars.hcl:4", "NOMAD_VAR_port"
}

// Variables is the rendered set of job variable values.
type Variables struct {
	list []variable
}

// Names returns the variable names, sorted.
func (v Variables) Names() []string {
	var names []string
	for _, x := range v.list {
		names = append(names, x.name)
	}
	return names
}

// RenderVariables collects job variable values with the nomad CLI's
// precedence, later wins: NOMAD_VAR_name from env, then each --var-file in
// order, then each --var name=value. Errors name the file and line (or the
// flag) and are bad input.
func RenderVariables(env, varFiles, vars []string) (Variables, error) {
	byName := map[string]variable{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		name, isVar := strings.CutPrefix(k, varEnvPrefix)
		if !ok || !isVar || name == "" {
			continue
		}
		if !hclsyntax.ValidIdentifier(name) {
			continue // the nomad CLI cannot use it either
		}
		byName[name] = variable{name, cliValue(v), k}
	}
	for _, f := range varFiles {
		list, err := readVarFile(f)
		if err != nil {
			return Variables{}, err
		}
		for _, x := range list {
			byName[x.name] = x
		}
	}
	for _, kv := range vars {
		name, v, ok := strings.Cut(kv, "=")
		name = strings.TrimSpace(name)
		if !ok || !hclsyntax.ValidIdentifier(name) {
			return Variables{}, fmt.Errorf("--var %q: want NAME=VALUE with NAME a valid identifier", kv)
		}
		byName[name] = variable{name, cliValue(v), "--var " + name}
	}
	var out Variables
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out.list = append(out.list, byName[name])
	}
	return out, nil
}

// cliValue reads a value given as text (a flag or an environment
// variable). The server converts a string to the variable's declared type
// for strings, numbers and booleans; a list or map only converts from its
// HCL form, so text that is a literal list or object is read as one, like
// the nomad CLI does for variables declared with such a type.
func cliValue(s string) cty.Value {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "[") || strings.HasPrefix(t, "{") {
		expr, diags := hclsyntax.ParseExpression([]byte(t), "value", hcl.InitialPos)
		if !diags.HasErrors() {
			if v, diags := expr.Value(nil); !diags.HasErrors() && v.IsWhollyKnown() {
				return v
			}
		}
	}
	return cty.StringVal(s)
}

// readVarFile reads a variables file (HCL or JSON, like `nomad job run
// -var-file`): name = value lines.
func readVarFile(path string) ([]variable, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--var-file: %w", err)
	}
	var f *hcl.File
	var diags hcl.Diagnostics
	if filepath.Ext(path) == ".json" || strings.HasPrefix(strings.TrimSpace(string(src)), "{") {
		f, diags = json.Parse(src, path)
	} else {
		f, diags = hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	}
	if diags.HasErrors() {
		return nil, diagsError(diags)
	}
	attrs, diags := f.Body.JustAttributes()
	if diags.HasErrors() {
		return nil, diagsError(diags)
	}
	var out []variable
	for _, name := range slices.Sorted(maps.Keys(attrs)) {
		a := attrs[name]
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() {
			return nil, diagsError(diags)
		}
		out = append(out, variable{name, v, fmt.Sprintf("%s:%d", a.Range.Filename, a.Range.Start.Line)})
	}
	return out, nil
}

// content returns the variables as the content of a variables file for
// the parse API, starting at line first, and which line holds which
// variable. The server names both the job and this content "input.hcl"
// in its errors; starting the variables after the job's last line lets
// an error's line number say which of the two it is about.
func (v Variables) content(first int) (string, map[int]string) {
	var b strings.Builder
	b.WriteString(strings.Repeat("\n", first-1))
	lines := map[int]string{}
	line := first
	for _, x := range v.list {
		val := hclwrite.TokensForValue(x.value).Bytes()
		fmt.Fprintf(&b, "%s = %s\n", x.name, val)
		// An object or a list may take several lines.
		for range strings.Count(string(val), "\n") + 1 {
			lines[line] = x.source
			line++
		}
	}
	if len(v.list) == 0 {
		return "", nil
	}
	return b.String(), lines
}

func diagsError(diags hcl.Diagnostics) error {
	var msgs []string
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			msgs = append(msgs, d.Error())
		}
	}
	return fmt.Errorf("%s", strings.Join(msgs, "\n"))
}
