package config

import (
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/hcl/v2"

	"github.com/platform-bootstrap/bootstrap/internal/secrets"
)

// WriteDiagnostics prints diagnostics one per line, as
// "Error: file:line,col-col: Summary; Detail".
func WriteDiagnostics(w io.Writer, diags hcl.Diagnostics) {
	for _, d := range diags {
		sev := "Error"
		if d.Severity == hcl.DiagWarning {
			sev = "Warning"
		}
		if d.Subject == nil {
			// Not about a place in the file (e.g. the file cannot be read).
			fmt.Fprintf(w, "%s: %s; %s\n", sev, d.Summary, d.Detail)
			continue
		}
		fmt.Fprintf(w, "%s: %s\n", sev, d.Error())
	}
}

// covers reports whether rng lies in an expression that calls env() or
// file(), so that a diagnostic about it is about a secret.
func (in *secretInputs) covers(rng hcl.Range) bool {
	for _, e := range in.exprs {
		if e.Overlaps(rng) {
			return true
		}
	}
	return false
}

// hide returns args with every argument that shows a value env() or file()
// returned replaced by a placeholder. It is meant for diagnostics about an
// expression that calls them, where even a short value (which the redactor
// ignores) is the secret.
func (in *secretInputs) hide(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = a
		s := fmt.Sprint(a)
		for _, v := range in.values {
			if v != "" && strings.Contains(s, v) {
				out[i] = hidden{}
				break
			}
		}
	}
	return out
}

// hidden prints secrets.Redacted in place of a value, whatever the verb:
// "url = %q" shows url = "<redacted>", "count = %d" count = <redacted>.
type hidden struct{}

func (hidden) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", secrets.Redacted)
		return
	}
	io.WriteString(f, secrets.Redacted)
}

// scrub removes the values env() and file() returned from every
// diagnostic's text, in any form the redactor knows: a value may show up in
// a diagnostic about another attribute (a namespace listed in an error
// about deploy_namespaces), where hide does not look.
func (in *secretInputs) scrub(diags hcl.Diagnostics) hcl.Diagnostics {
	if len(in.values) == 0 {
		return diags
	}
	red := secrets.NewRedactor()
	red.Add(in.values...)
	for _, d := range diags {
		d.Summary = red.String(d.Summary)
		d.Detail = red.String(d.Detail)
	}
	return diags
}
