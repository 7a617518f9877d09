package config

import (
	"fmt"
	"io"

	"github.com/hashicorp/hcl/v2"
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
