package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/internal/ui"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/platform"
)

func newUpCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "up",
		Short: "Bring the platform up, or finish and repair it (converges; safe to re-run)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.execute("up", func(ctx context.Context, r *stages.Runner, sel stages.Selection, sess *stages.Session) ([]statedir.StageResult, error) {
				return r.Up(ctx, sel)
			})
		},
	}
}

func newPlanCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "plan",
		Short: "Show what up would change, asking the live system (exit 0: none, 4: changes pending)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			g.autoApprove = true
			var pending bool
			err := g.execute("plan", func(ctx context.Context, r *stages.Runner, sel stages.Selection, sess *stages.Session) ([]statedir.StageResult, error) {
				res, err := r.Plan(ctx, sel)
				for _, s := range res {
					if s.Outcome != statedir.OutcomeUnchanged {
						pending = true
					}
				}
				return res, err
			})
			if err == nil && pending {
				return &exitError{code: exitChanges}
			}
			return err
		},
	}
}

func newDownCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop and remove everything the platform runs and provisioned",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.execute("down", func(ctx context.Context, r *stages.Runner, sel stages.Selection, sess *stages.Session) ([]statedir.StageResult, error) {
				if g.interactive() {
					ok, err := g.confirm("This stops every node and destroys the platform, its data and its secrets. Continue?")
					if err != nil || !ok {
						return nil, errors.Join(err, stages.ErrNotApproved)
					}
				}
				res, err := r.Down(ctx, sel)
				if err == nil && len(sel.Only) == 0 && sel.From == "" && len(sel.Skip) == 0 {
					err = sess.Purge()
				}
				return res, err
			})
		},
	}
}

// interactive reports whether the user can be asked.
func (g *globals) interactive() bool {
	if g.autoApprove || os.Getenv("CI") == "true" || g.output == ui.ModeJSON {
		return false
	}
	return term.IsTerminal(int(g.stdin.Fd()))
}

func (g *globals) confirm(question string) (bool, error) {
	fmt.Fprintf(g.stdout, "%s [y/N] ", question)
	line, err := bufio.NewReader(g.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes", nil
}

// loadConfig parses the configuration and the stage selection; any mistake
// is a usage error and nothing has been touched yet. The redactor it returns
// already knows the credentials in the environment and the secrets of the
// configuration, so everything the command prints can go through it, the
// diagnostics first.
func (g *globals) loadConfig() (*config.Platform, stages.Selection, string, *secrets.Redactor, error) {
	sel := stages.Selection{Only: g.only, From: g.from, Skip: g.skip}
	if err := sel.Validate(platform.Stages()); err != nil {
		return nil, sel, "", nil, err
	}
	mode, err := ui.Resolve(g.output, g.stdout)
	if err != nil {
		return nil, sel, "", nil, &exitError{code: exitUsage, err: err}
	}
	red := secrets.NewRedactor()
	red.Add(secrets.EnvCredentials()...)
	cfg, diags := config.Load(g.config)
	if cfg != nil {
		red.Add(configSecrets(cfg)...)
	}
	w := red.Writer(g.stderr)
	defer w.Close()
	if diags.HasErrors() {
		return nil, sel, "", nil, diagError(w, diags)
	}
	printDiags(w, diags) // warnings
	return cfg, sel, mode, red, nil
}

func (g *globals) stateDirFor(cfg *config.Platform) string {
	if g.stateDir != "" {
		return g.stateDir
	}
	return filepath.Join(cfg.Dir, ".bootstrap")
}

// configSecrets are secret values that come from the configuration itself:
// what it reads with env() and file(), and a runner token written in it.
func configSecrets(cfg *config.Platform) []string {
	out := append([]string{}, cfg.Secrets...)
	if cfg.GitLabRunner != nil {
		out = append(out, cfg.GitLabRunner.Token)
	}
	return out
}

type runFunc func(ctx context.Context, r *stages.Runner, sel stages.Selection, sess *stages.Session) ([]statedir.StageResult, error)

// execute runs one locked command: config, lock, stages, output, summary.
func (g *globals) execute(command string, fn runFunc) error {
	cfg, sel, mode, red, err := g.loadConfig()
	if err != nil {
		return err
	}
	stateDir := g.stateDirFor(cfg)
	sess, err := stages.Open(stateDir, command, red)
	if err != nil {
		var le *statedir.LockedError
		if errors.As(err, &le) {
			return &exitError{code: exitLocked, err: err}
		}
		return &exitError{code: exitFailure, err: err}
	}

	var out io.Writer = g.stdout
	var lw *secrets.LineWriter
	if mode != ui.ModeTTY {
		lw = red.Writer(g.stdout)
		out = lw
	}
	all := platform.Stages()
	var names []string
	for _, s := range sel.Pick(all) {
		names = append(names, s.Name())
	}
	sink := ui.New(mode, out, names)
	logSink := ui.NewLog(sess.LogWriter())
	reporter := stages.ReporterFunc(func(e stages.Event) {
		sink.Event(e)
		logSink.Event(e)
	})
	env := stages.NewEnv(cfg, stateDir, sess.Secrets, sess.State, sess.LogWriter(), reporter)
	runner := &stages.Runner{Stages: all, Env: env}
	if command == "up" && g.interactive() {
		runner.Approve = func(plans []statedir.StageResult) (bool, error) {
			sink.Close()
			sink = ui.New(ui.ModePlain, io.Discard, nil)
			w := red.Writer(g.stdout)
			ui.Plans(w, plans)
			w.Close()
			ok, err := g.confirm("Apply these changes?")
			if ok {
				sink = ui.New(mode, out, names)
			}
			return ok, err
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal cancels the run, which stops cleanly; a second one
	// kills at once (the run is crash-safe), so a stage stuck in a call that
	// ignores its context cannot make bootstrap unkillable.
	go func() {
		<-ctx.Done()
		stop()
	}()
	start := time.Now()
	env.Emit(stages.Event{Type: stages.EventRunStart, Run: sess.RunID, Command: command, Stale: sess.Lock.Stale})
	results, runErr := fn(ctx, runner, sel, sess)
	ev := stages.Event{Type: stages.EventRunEnd, Command: command, Duration: time.Since(start), Stages: results}
	if runErr != nil {
		ev.Error = runErr.Error()
	}
	env.Emit(ev)
	sink.Close()
	if lw != nil {
		lw.Close()
	}
	if mode != ui.ModeJSON {
		printSummary(red.Writer(g.stdout), command, results, time.Since(start), sess, cfg, g.self(), runErr)
	}
	if err := sess.Close(results, runErr); err != nil {
		runErr = errors.Join(runErr, err)
	}
	if runErr != nil {
		if errors.Is(runErr, stages.ErrNotApproved) {
			return &exitError{code: exitFailure, err: stages.ErrNotApproved}
		}
		code := exitFailure
		// An inventory that tries to set what only bootstrap may is bad
		// input, like a bad configuration.
		var local *inventory.LocalFieldError
		var usage *stages.UsageError
		if errors.As(runErr, &local) || errors.As(runErr, &usage) {
			code = exitUsage
		}
		return &exitError{code: code, err: errors.New(red.String(runErr.Error()))}
	}
	return nil
}

func printSummary(w *secrets.LineWriter, command string, results []statedir.StageResult, took time.Duration, sess *stages.Session, cfg *config.Platform, self string, runErr error) {
	defer w.Close()
	ui.Results(w, results)
	status := "Finished"
	if runErr != nil {
		status = "Failed"
	}
	fmt.Fprintf(w, "\n%s %s in %s. Log: %s\n", status, command, took.Round(100*time.Millisecond), sess.LogPath)
	if command != "up" && command != "restore" || runErr != nil {
		if runErr != nil && (command == "up" || command == "restore") {
			fmt.Fprintln(w, "Fix the cause and run `bootstrap up` again: it resumes where it stopped.")
		}
		return
	}
	printURLs(w, sess.State.Outputs(), sess.Secrets.Dir(), cfg, self)
}

// self is this command as the user can paste it again: the path it was run
// by (bin/bootstrap after make up, where bootstrap is not on PATH) and the
// configuration when it is not the default.
func (g *globals) self() string {
	cmd := "bootstrap"
	if strings.Contains(os.Args[0], "/") {
		cmd = os.Args[0]
	}
	if g.config != "platform.hcl" {
		cmd += " -c " + shellQuote(g.config)
	}
	return cmd
}

func printURLs(w io.Writer, out map[string]string, secretDir string, cfg *config.Platform, self string) {
	deployNS := stages.DeployNamespaces(cfg)
	type row struct{ label, key, suffix string }
	rows := []row{
		{"Vault", stages.OutVaultAddr, ""},
		{"Consul", stages.OutConsulAddr, ""},
		{"Nomad UI", stages.OutNomadAddr, "/ui/"},
		{"Prometheus", stages.OutPrometheusAddr, ""},
		{"Alertmanager", stages.OutAlertmanagerAddr, ""},
		{"Grafana", stages.OutGrafanaAddr, ""},
		{"Fabio", stages.OutFabioAddr, ""},
		{"Fabio UI", stages.OutFabioUIAddr, ""},
	}
	if cfg.Consul.UI {
		rows[1] = row{"Consul UI", stages.OutConsulAddr, "/ui/"}
	}
	for _, ns := range cfg.Nomad.Namespaces {
		rows = append(rows, row{"Apps (" + ns + ")", stages.OutFabioAppAddr(ns), ""})
	}
	any := false
	for _, r := range rows {
		if v := out[r.key]; v != "" {
			if !any {
				fmt.Fprintln(w)
				any = true
			}
			fmt.Fprintf(w, "  %-13s %s%s\n", r.label, v, r.suffix)
		}
	}
	if !any {
		return
	}
	fmt.Fprintf(w, "\n  Secrets (unseal keys, tokens) are in %s (0700).\n", secretDir)
	fmt.Fprintf(w, "  Use the CLIs: eval \"$(%s env --token admin)\"\n", self)
	if dir := filepath.Dir(strings.Fields(self)[0]); dir != "." {
		// bootstrap is not on PATH (after make up it is bin/bootstrap).
		if abs, err := filepath.Abs(dir); err == nil {
			fmt.Fprintf(w, "  To type just bootstrap: export PATH=\"%s:$PATH\"\n", abs)
		}
	}
	if out[stages.OutNomadAddr] != "" {
		fmt.Fprintf(w, "\n  GitLab CI/CD variables for deploys (bootstrap deploy); each NOMAD_TOKEN scoped to its\n  environment, and protected where merge requests must not deploy (prod):\n")
		fmt.Fprintf(w, "    NOMAD_ADDR    %s\n", out[stages.OutNomadAddr])
		fmt.Fprintf(w, "    NOMAD_CACERT  a file variable with the contents of %s\n", out[stages.OutNomadCACert])
		for _, ns := range deployNS {
			fmt.Fprintf(w, "    NOMAD_TOKEN   scope %-5s masked, the contents of %s\n", ns+":", filepath.Join(secretDir, stages.SecretNomadDeployToken(ns)))
		}
	}
}
