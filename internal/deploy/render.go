package deploy

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/hashicorp/hcl/v2/json"
	"github.com/zclconf/go-cty/cty"
)

// envRef matches ${NAME} with an upper-case shell-style name, optionally
// preceded by one more "$" (HCL's escape: "$${X}" is the literal "${X}").
var envRef = regexp.MustCompile(`\$?\$\{([A-Z_][A-Z0-9_]*)\}`)

// envName is what --env accepts: the names envRef can match.
var envName = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)

// BuildVars are the names substituted without --env: GitLab's predefined
// variables that identify the build (commit, ref, pipeline, job, project,
// registry, environment, server). None of them is a credential, and all of
// them are already visible to anyone who can see the pipeline, so they may
// end up in the job, which everyone with the UI's read token can read.
var BuildVars = []string{
	"CI_COMMIT_SHA", "CI_COMMIT_SHORT_SHA",
	"CI_COMMIT_REF_NAME", "CI_COMMIT_REF_SLUG", "CI_COMMIT_BRANCH", "CI_COMMIT_TAG",
	"CI_DEFAULT_BRANCH",
	"CI_PIPELINE_ID", "CI_PIPELINE_IID", "CI_PIPELINE_URL",
	"CI_JOB_ID", "CI_JOB_URL",
	"CI_PROJECT_ID", "CI_PROJECT_NAME", "CI_PROJECT_NAMESPACE", "CI_PROJECT_PATH", "CI_PROJECT_PATH_SLUG", "CI_PROJECT_URL",
	"CI_REGISTRY", "CI_REGISTRY_IMAGE",
	"CI_ENVIRONMENT_NAME", "CI_ENVIRONMENT_SLUG",
	"CI_SERVER_URL",
}

// secretWords mark a variable name as a credential's: its value is never
// substituted (not even with --env) and is removed from deploy's output.
// Matching is on the upper-cased name, so that NOMAD_VAR_db_password
// counts too. It errs on the side of secrecy: a false match only costs an
// --env refusal or a "<redacted>" in the log.
var secretWords = []string{"TOKEN", "PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "KEY", "JWT", "PRIVATE", "CREDENTIAL"}

// secretParts match a whole "_"-separated part of the name only: as
// substrings they would catch CI_COMMIT_AUTHOR or BYPASS_CACHE.
var secretParts = []string{"AUTH", "PASS", "PW"}

// secretNames are GitLab's predefined variables that hold a credential or
// half of one without saying so in their name: CI_REPOSITORY_URL embeds
// the job token, the *_USER names pair with a password.
var secretNames = []string{"CI_REPOSITORY_URL", "CI_REGISTRY_USER", "CI_DEPLOY_USER", "CI_DEPENDENCY_PROXY_USER"}

// secretReason says why name looks like a credential's, or "" when it
// does not.
func secretReason(name string) string {
	n := strings.ToUpper(name)
	if slices.Contains(secretNames, n) {
		return "it holds a credential or part of one"
	}
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return fmt.Sprintf("its name contains %q", w)
		}
	}
	for _, p := range strings.Split(n, "_") {
		if slices.Contains(secretParts, p) {
			return fmt.Sprintf("its name contains %q", p)
		}
	}
	return ""
}

// IsSecretName reports whether the environment variable name looks like a
// credential's (CI_JOB_TOKEN, CI_REGISTRY_PASSWORD, AWS_SECRET_ACCESS_KEY,
// …).
func IsSecretName(name string) bool { return secretReason(name) != "" }

// CheckEnvName checks a name given with --env. It refuses names ${NAME}
// cannot refer to, Nomad's runtime variables, and credentials: a value
// substituted into the job is stored in Nomad, where everyone with the UI's
// read token can read it, and it is printed in the plan's diff.
func CheckEnvName(name string) error {
	switch {
	case !envName.MatchString(name):
		return fmt.Errorf("--env %q: want an upper-case NAME (A-Z, 0-9, _), as in ${NAME}", name)
	case strings.HasPrefix(name, "NOMAD_"):
		return fmt.Errorf("--env %s: names starting with NOMAD_ are Nomad's runtime variables and are never substituted", name)
	}
	if why := secretReason(name); why != "" {
		return fmt.Errorf("--env %s: refused, it looks like a secret (%s): a substituted value is stored in the Nomad job, readable by everyone with the UI's read token, and printed in the plan's diff; give the task secrets at run time (Nomad Variables or Vault) instead", name, why)
	}
	return nil
}

// Substitution is what SubstituteEnv did.
type Substitution struct {
	Substituted []string // names replaced by their value, sorted
	Left        []string // names not set here, or NOMAD_ names: left for Nomad, sorted
	NotAllowed  []string // names set here but neither in BuildVars nor given with --env: left for Nomad, sorted
	Secret      []string // secret-looking names: never substituted, left for Nomad, sorted
}

// SubstituteEnv replaces ${NAME} in a job file with the value of the
// environment variable NAME, like `envsubst` in the dissertation's pipeline
// (listing 5.7), so that job files written for that pipeline deploy
// unchanged — but only for build identifiers (BuildVars) and the names
// given with --env (names), never for every variable: a CI job's
// environment holds credentials (CI_JOB_TOKEN, CI_REGISTRY_PASSWORD, the
// project's secrets), and whatever is substituted is stored in the Nomad
// job and printed in the plan. The rules that let it live next to HCL2 and
// Nomad's own interpolation:
//
//   - only ${NAME} where NAME is upper case letters, digits and "_"
//     (${var.x}, ${local.x}, ${attr.x}, ${meta.x}, ${node.x}, ${env.x} and
//     ${NOMAD_PORT_http} all contain a "." or a lower-case letter and are
//     never touched);
//   - only when NAME is allowed and set in the environment (even to "");
//     anything else stays for Nomad, which interpolates it at run time from
//     the task's environment;
//   - never NAME starting with NOMAD_: those are Nomad's runtime variables
//     (NOMAD_ALLOC_DIR, NOMAD_TASK_NAME, …) even when this process has one
//     set, e.g. NOMAD_ADDR;
//   - never a secret-looking NAME (IsSecretName), whatever names says;
//   - never "$${NAME}": that is HCL's escape for a literal "${NAME}" and is
//     how a job asks for runtime interpolation of a name that the CI
//     environment also has;
//   - only inside a string: a quoted string (an attribute's value or a
//     block's label) or a heredoc. ${NAME} in a comment is left alone;
//     anywhere else it would be spliced into HCL syntax, and it is an error
//     naming file:line.
//
// Values are escaped so that the string means exactly the value: quotes,
// backslashes, newlines, "${" and "%{" in a value are text, never HCL or
// interpolation. The file keeps its line numbers, so the server's errors
// point at the right line.
func SubstituteEnv(file string, src []byte, env, names []string) ([]byte, Substitution, error) {
	allowed := map[string]bool{}
	for _, n := range BuildVars {
		allowed[n] = true
	}
	for _, n := range names {
		if err := CheckEnvName(n); err != nil {
			return nil, Substitution{}, err
		}
		allowed[n] = true
	}
	vals := envMap(env)
	refs, comments := scanTemplates(src)

	var out []byte
	var outside []string
	done, left, notAllowed, secret := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	last := 0
	for _, loc := range envRef.FindAllSubmatchIndex(src, -1) {
		start, end := loc[0], loc[1]
		name := string(src[loc[2]:loc[3]])
		ctx, inString := refs[start]
		switch {
		case src[start+1] == '$': // "$${NAME}": escaped
			continue
		case inComment(comments, start):
			continue
		case !inString:
			outside = append(outside, fmt.Sprintf("%s:%d: ${%s} is outside a quoted string", file, lineAt(src, start), name))
			continue
		case strings.HasPrefix(name, "NOMAD_"):
			left[name] = true
			continue
		case IsSecretName(name):
			secret[name] = true
			continue
		}
		v, set := vals[name]
		switch {
		case !set:
			left[name] = true
			continue
		case !allowed[name]:
			notAllowed[name] = true
			continue
		case !utf8.ValidString(v):
			return nil, Substitution{}, fmt.Errorf("%s:%d: ${%s}: the value is not valid UTF-8, which an HCL string cannot hold", file, lineAt(src, start), name)
		}
		done[name] = true
		out = appendPiece(out, src[last:start])
		if ctx == heredoc {
			out = appendPiece(out, []byte(heredocValue(v)))
		} else {
			out = appendPiece(out, []byte(quotedValue(v)))
		}
		last = end
	}
	if len(outside) > 0 {
		return nil, Substitution{}, fmt.Errorf("%s\n(only ${NAME} inside a string is substituted, so that a value can never become HCL syntax; quote it, or pass a number or a list as a job variable with --var)", strings.Join(outside, "\n"))
	}
	out = appendPiece(out, src[last:])
	return out, Substitution{
		Substituted: slices.Sorted(maps.Keys(done)),
		Left:        slices.Sorted(maps.Keys(left)),
		NotAllowed:  slices.Sorted(maps.Keys(notAllowed)),
		Secret:      slices.Sorted(maps.Keys(secret)),
	}, nil
}

// stringKind is the kind of string a ${NAME} is in.
type stringKind int

const (
	quoted  stringKind = iota + 1 // "…": backslash escapes apply
	heredoc                       // <<EOT … EOT: no escapes; a line can end it
)

// scanTemplates lexes src the way Nomad's parser does and returns where a
// whole ${NAME} (no spaces, no "~" strip markers) is an interpolation, by
// the byte offset of its "$", with the kind of string it is in; and the
// byte ranges of comments.
func scanTemplates(src []byte) (map[int]stringKind, [][2]int) {
	// A broken file lexes as far as it can; the server reports its errors.
	toks, _ := hclsyntax.LexConfig(src, "", hcl.InitialPos)
	refs := map[int]stringKind{}
	var comments [][2]int
	var strs []stringKind // the strings open at a token, innermost last
	for i, t := range toks {
		switch t.Type {
		case hclsyntax.TokenComment:
			comments = append(comments, [2]int{t.Range.Start.Byte, t.Range.End.Byte})
		case hclsyntax.TokenOQuote:
			strs = append(strs, quoted)
		case hclsyntax.TokenOHeredoc:
			strs = append(strs, heredoc)
		case hclsyntax.TokenCQuote, hclsyntax.TokenCHeredoc:
			if len(strs) > 0 {
				strs = strs[:len(strs)-1]
			}
		case hclsyntax.TokenTemplateInterp:
			if len(strs) == 0 || i+2 >= len(toks) || string(t.Bytes) != "${" {
				continue
			}
			id, end := toks[i+1], toks[i+2]
			if id.Type == hclsyntax.TokenIdent && end.Type == hclsyntax.TokenTemplateSeqEnd && string(end.Bytes) == "}" &&
				id.Range.Start.Byte == t.Range.End.Byte && end.Range.Start.Byte == id.Range.End.Byte {
				refs[t.Range.Start.Byte] = strs[len(strs)-1]
			}
		}
	}
	return refs, comments
}

func inComment(comments [][2]int, off int) bool {
	for _, c := range comments {
		if off >= c[0] && off < c[1] {
			return true
		}
	}
	return false
}

// lineAt returns the 1-based line of the byte offset off.
func lineAt(src []byte, off int) int {
	return bytes.Count(src[:off], []byte("\n")) + 1
}

// quotedValue returns s escaped for the inside of a quoted HCL string: the
// string then holds exactly s, whether it is a template (an attribute's
// value) or a block's label, where templates are not allowed.
func quotedValue(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '"':
			b.WriteString(`\"`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		case (r == '$' || r == '%') && i+1 < len(s) && s[i+1] == '{':
			// "$${" and "%%{" are HCL's escapes for a literal "${" and
			// "%{".
			b.WriteRune(r)
			b.WriteRune(r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// heredocValue returns s for the inside of a heredoc, which has no
// backslash escapes and ends at a line holding its marker: as an
// interpolation of a quoted string, ${"…"}, which keeps s on one line and
// whose own quotes separate s from the text around it.
func heredocValue(s string) string {
	return `${"` + quotedValue(s) + `"}`
}

// appendPiece appends p to a job file being substituted. Where a value
// meets the text around it, a "$" or "%" followed by "{" would start an
// interpolation or a directive that neither of them has on its own (a
// value ending in "$" before "{", a value starting with "{" after "%"):
// doubling that "$" or "%" makes the pair HCL's escape for the literal
// text instead.
func appendPiece(out, p []byte) []byte {
	if n := len(out); n > 0 && len(p) > 0 && p[0] == '{' && (out[n-1] == '$' || out[n-1] == '%') {
		out = append(out, out[n-1])
	}
	return append(out, p...)
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
