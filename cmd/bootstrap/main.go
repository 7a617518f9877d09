// Command bootstrap brings up a HashiCorp platform — Vault PKI, Consul and
// Nomad with mTLS and ACLs, and the monitoring and ingress jobs — in stages
// that converge and resume.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/spf13/cobra"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/platform"
)

// Exit codes; scripts and CI depend on them.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitLocked  = 3
	exitChanges = 4
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes the CLI and returns the process exit code.
func run(args []string, stdin *os.File, stdout, stderr *os.File) int {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	return exitCode(err, stderr)
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "Error:", ee.err)
		}
		return ee.code
	}
	var le *statedir.LockedError
	if errors.As(err, &le) {
		fmt.Fprintln(stderr, "Error:", err)
		return exitLocked
	}
	var ue *stages.UsageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "Error:", err)
		return exitUsage
	}
	// Anything else cobra returns before running a command is a usage error
	// (unknown flag, missing argument).
	fmt.Fprintln(stderr, "Error:", err)
	if isCobraUsage(err) {
		return exitUsage
	}
	return exitFailure
}

func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown flag", "unknown shorthand flag", "unknown command", "flag needs an argument", "invalid argument", "accepts ", "requires at least", "requires at most", "unknown help topic", "bad flag syntax"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// globals are the flags every command shares.
type globals struct {
	stdin          *os.File
	stdout, stderr *os.File

	config      string
	stateDir    string
	only        []string
	from        string
	skip        []string
	autoApprove bool
	output      string
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "bootstrap",
		Short: "Bring up a Vault, Consul and Nomad platform with monitoring, in stages that converge",
		Long: `bootstrap brings up a complete HashiCorp platform from nothing: machines,
Vault and its PKI, Consul and Nomad with mTLS and ACLs, and the platform jobs
(Fabio, Prometheus, Alertmanager, Grafana, node-exporter, GitLab Runner).

Every stage plans against the live system and applies only the difference:
a second "up" changes nothing, and a killed run is finished by the next one.

Stages: ` + strings.Join(platform.Names(), ", ") + `

Exit codes: 0 ok, 1 failure, 2 bad configuration or usage, 3 state locked by
another run; plan: 0 no changes, 4 changes pending.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	pf := root.PersistentFlags()
	pf.StringVarP(&g.config, "config", "c", "platform.hcl", "platform configuration `FILE`")
	pf.StringVar(&g.stateDir, "state-dir", "", "state `DIR` (default: .bootstrap next to the config file)")
	pf.StringSliceVar(&g.only, "only", nil, "run only these `STAGES` (comma-separated)")
	pf.StringVar(&g.from, "from", "", "start at this `STAGE`")
	pf.StringSliceVar(&g.skip, "skip", nil, "skip these `STAGES` (comma-separated)")
	pf.BoolVar(&g.autoApprove, "auto-approve", false, "apply without asking (implied when stdin is not a terminal or CI=true)")
	pf.StringVar(&g.output, "output", "auto", "output `MODE`: auto, tty, plain or json")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: exitUsage, err: err}
	})

	root.AddCommand(
		newUpCmd(g), newDownCmd(g), newPlanCmd(g), newStatusCmd(g),
		newEnvCmd(g), newValidateCmd(g), newVersionCmd(g),
		newDeployCmd(g), newHistoryCmd(g), newBackupCmd(g), newRestoreCmd(g), newRotateCmd(g),
	)
	return root
}

// diagError prints configuration diagnostics and returns the usage exit.
func diagError(w io.Writer, diags hcl.Diagnostics) error {
	printDiags(w, diags)
	return &exitError{code: exitUsage}
}

func printDiags(w io.Writer, diags hcl.Diagnostics) {
	config.WriteDiagnostics(w, diags)
}
