package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	platformjobs "github.com/platform-bootstrap/bootstrap/jobs"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/platform"
	"github.com/platform-bootstrap/bootstrap/tools"
)

func newValidateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate",
		Short: "Check the configuration file (exit 0 valid, 2 invalid); changes nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, _, red, err := g.loadConfig()
			if err != nil {
				return err
			}
			w := red.Writer(g.stdout)
			fmt.Fprintf(w, "%s is valid: %s\n", g.config, describe(cfg.Provider))
			return w.Close()
		},
	}
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of bootstrap and of the components it installs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(g.stdout, "bootstrap %s\n", version)
			v := tools.Versions()
			for _, k := range []string{"VAULT", "CONSUL", "NOMAD", "CONSUL_TEMPLATE", "FABIO", "PROMETHEUS", "GRAFANA"} {
				fmt.Fprintf(g.stdout, "  %-16s %s\n", strings.ToLower(strings.ReplaceAll(k, "_", "-")), v[k+"_VERSION"])
			}
			// The docker driver runs images, not these binaries; Grafana's
			// image is another release than its tested build.
			fmt.Fprintln(g.stdout, "Images of the platform jobs with the docker driver:")
			var images []string
			for _, vars := range platformjobs.Images(v) {
				for _, img := range vars {
					images = append(images, img)
				}
			}
			sort.Strings(images)
			for _, img := range images {
				fmt.Fprintf(g.stdout, "  %s\n", img)
			}
			// What a user sees in the Consul UI's footer would otherwise
			// look like a wrong build.
			fmt.Fprintln(g.stdout, "The Consul web UI is the one its Go module ships, which calls itself 1.19.0-dev.")
			return nil
		},
	}
}

// openReadOnly opens the state and secrets of an existing state directory
// without taking the lock, for commands that only read (status, env).
func (g *globals) openReadOnly() (*stages.Env, error) {
	cfg, _, _, red, err := g.loadConfig()
	if err != nil {
		return nil, err
	}
	dir := g.stateDirFor(cfg)
	if _, err := os.Stat(filepath.Join(dir, statedir.StateFile)); err != nil {
		return nil, &exitError{code: exitFailure, err: fmt.Errorf("no platform state in %s: run `bootstrap up` first", dir)}
	}
	// Without the lock an `up` may be writing beside us: nothing in the
	// state directory is removed (only the lock holder cleans it up).
	state, store, err := stages.OpenReadOnly(dir, red)
	if err != nil {
		return nil, &exitError{code: exitFailure, err: err}
	}
	return stages.NewEnv(cfg, dir, store, state, nil, nil), nil
}

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show each stage's progress, every node's agents and every platform job's health",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, err := g.openReadOnly()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			type stageRow struct {
				Name string `json:"name"`
				statedir.StageState
			}
			var rows []stageRow
			var lines []stages.StatusLine
			var errs []error
			for _, st := range platform.Stages() {
				rows = append(rows, stageRow{st.Name(), env.State.Stage(st.Name())})
				if s, ok := st.(stages.Statuser); ok {
					l, err := s.Status(ctx, env.ForStage(st.Name()))
					lines = append(lines, l...)
					if err != nil {
						errs = append(errs, fmt.Errorf("%s: %w", st.Name(), err))
					}
				}
			}
			red := env.Secrets.Redactor()
			if g.output == "json" {
				enc := json.NewEncoder(red.Writer(g.stdout))
				return enc.Encode(map[string]any{"stages": rows, "components": lines, "outputs": env.State.Outputs()})
			}
			w := red.Writer(g.stdout)
			defer w.Close()
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "STAGE\tSTATUS\tFINISHED\tERROR")
			for _, r := range rows {
				fin := ""
				if !r.Finished.IsZero() {
					fin = r.Finished.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Status, fin, r.Error)
			}
			tw.Flush()
			if len(lines) > 0 {
				fmt.Fprintln(w)
				tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "COMPONENT\tNODE\tSTATE\tDETAIL")
				for _, l := range lines {
					mark := "ok"
					if !l.Healthy {
						mark = "!!"
					}
					fmt.Fprintf(tw, "%s %s\t%s\t%s\t%s\n", mark, l.Component, l.Node, l.State, l.Detail)
				}
				tw.Flush()
			}
			printURLs(w, env.State.Outputs(), env.Secrets.Dir(), env.Config, g.self())
			if len(errs) > 0 {
				return &exitError{code: exitFailure, err: errors.Join(errs...)}
			}
			return nil
		},
	}
}

func newEnvCmd(g *globals) *cobra.Command {
	var token string
	cmd := &cobra.Command{
		Use:   "env",
		Short: `Print export lines for the official CLIs: eval "$(bootstrap env --token admin)"`,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ns, isCI := strings.CutPrefix(token, "ci-")
			if token != "" && token != "admin" && token != "ui" && token != "ci" && (!isCI || ns == "") {
				return &exitError{code: exitUsage, err: fmt.Errorf("--token %q: use admin, ui or ci-NAMESPACE (e.g. ci-dev)", token)}
			}
			env, err := g.openReadOnly()
			if err != nil {
				return err
			}
			deployNS := stages.DeployNamespaces(env.Config)
			if token == "ci" && len(deployNS) > 0 {
				// One token for every namespace let dev's pipelines
				// deploy to prod; ci now means the first namespace's.
				fmt.Fprintf(g.stderr, "bootstrap env: --token ci is deprecated: it is --token ci-%s now; use ci-%s\n", deployNS[0], strings.Join(deployNS, " or ci-"))
				token, ns, isCI = "ci-"+deployNS[0], deployNS[0], true
			}
			if isCI && !slices.Contains(deployNS, ns) {
				return &exitError{code: exitUsage, err: fmt.Errorf("--token %q: %q is not a deploy namespace; deploy tokens: ci-%s", token, ns, strings.Join(deployNS, ", ci-"))}
			}
			vars, err := envVars(env.State.Outputs(), env.Secrets, token, env.Config.Nomad.Namespaces)
			if err != nil {
				return &exitError{code: exitFailure, err: err}
			}
			writeExports(g.stdout, vars)
			return nil
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "add the tokens of an identity: admin, ui (read-only) or ci-NAMESPACE (deploys to that namespace only, e.g. ci-dev)")
	return cmd
}

// envVars maps outputs and, when asked, tokens to the variables the official
// CLIs read. token is admin, ui or ci-NAMESPACE.
func envVars(out map[string]string, store *secrets.Store, token string, namespaces []string) (map[string]string, error) {
	vars := map[string]string{}
	set := func(name, key string) {
		if v := out[key]; v != "" {
			vars[name] = v
		}
	}
	set("VAULT_ADDR", stages.OutVaultAddr)
	set("VAULT_CACERT", stages.OutVaultCACert)
	set("CONSUL_HTTP_ADDR", stages.OutConsulAddr)
	set("CONSUL_CACERT", stages.OutConsulCACert)
	set("NOMAD_ADDR", stages.OutNomadAddr)
	set("NOMAD_CACERT", stages.OutNomadCACert)
	set("PROMETHEUS_ADDR", stages.OutPrometheusAddr)
	set("ALERTMANAGER_ADDR", stages.OutAlertmanagerAddr)
	set("GRAFANA_ADDR", stages.OutGrafanaAddr)
	set("FABIO_ADDR", stages.OutFabioAddr)
	set("FABIO_UI_ADDR", stages.OutFabioUIAddr)
	// The CLIs dial an address and verify the name in the servers'
	// certificates: a client node's certificate must not pass for a server.
	set("NOMAD_TLS_SERVER_NAME", stages.OutNomadTLSServerName)
	set("CONSUL_TLS_SERVER_NAME", stages.OutConsulTLSServerName)
	if vars["VAULT_ADDR"] != "" {
		vars["VAULT_TLS_SERVER_NAME"] = apitls.VaultServerName
	}
	for _, ns := range namespaces {
		// FABIO_DEV_ADDR: where namespace dev's applications are served.
		set("FABIO_"+strings.ToUpper(strings.ReplaceAll(ns, "-", "_"))+"_ADDR", stages.OutFabioAppAddr(ns))
	}

	tokens := map[string][][2]string{
		"admin": {{"VAULT_TOKEN", stages.SecretVaultAdminToken}, {"CONSUL_HTTP_TOKEN", stages.SecretConsulBootstrapToken}, {"NOMAD_TOKEN", stages.SecretNomadBootstrapToken}},
		"ui":    {{"CONSUL_HTTP_TOKEN", stages.SecretConsulOperatorToken}, {"NOMAD_TOKEN", stages.SecretNomadUIToken}},
	}
	if ns, ok := strings.CutPrefix(token, "ci-"); ok {
		tokens[token] = [][2]string{{"NOMAD_TOKEN", stages.SecretNomadDeployToken(ns)}}
	}
	for _, t := range tokens[token] {
		v, ok, err := store.Get(t[1])
		if err != nil {
			return nil, err
		}
		if ok {
			vars[t[0]] = strings.TrimSpace(v)
		}
	}
	if token == "admin" {
		if _, ok := vars["VAULT_TOKEN"]; !ok {
			// Before the pki stage creates the admin identity, the root
			// token is the only Vault identity.
			if v, ok, err := store.Get(stages.SecretVaultRootToken); err == nil && ok {
				vars["VAULT_TOKEN"] = strings.TrimSpace(v)
			}
		}
	}
	return vars, nil
}

func writeExports(w io.Writer, vars map[string]string) {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "export %s=%s\n", k, shellQuote(vars[k]))
	}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

func describe(p config.Provider) string {
	switch {
	case p.Local != nil:
		return fmt.Sprintf("local provider, %d server(s) and %d client(s) on %s", p.Local.Servers, p.Local.Clients, p.Local.Subnet)
	case p.Terraform != nil:
		return fmt.Sprintf("terraform provider, module %s", p.Terraform.Module)
	case p.Static != nil:
		if p.Static.Inventory != "" {
			return "static provider, inventory " + p.Static.Inventory
		}
		return fmt.Sprintf("static provider, %d node(s)", len(p.Static.Nodes))
	}
	return p.Type + " provider"
}
