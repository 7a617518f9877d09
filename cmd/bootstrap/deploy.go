package main

import (
	"errors"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/platform-bootstrap/bootstrap/internal/deploy"
)

func newDeployCmd(g *globals) *cobra.Command {
	o := deploy.Options{}
	cmd := &cobra.Command{
		Use:   "deploy JOBFILE",
		Short: "Deploy an application's Nomad job into dev or prod, from CI (exit 0: healthy or no changes, 1: failed, 2: bad input, 4: --plan-only with changes)",
		Long: `deploy validates, plans and registers an application's Nomad job, follows
its deployment until it is healthy, and reverts to the last stable version
when it is not. It is what the GitLab CI template (ci/gitlab) runs.

It needs no platform configuration or state: only NOMAD_ADDR, NOMAD_TOKEN
(the CI deploy token) and NOMAD_CACERT, and NOMAD_CLIENT_CERT,
NOMAD_CLIENT_KEY and NOMAD_TLS_SERVER_NAME when set. The global flags
(--config, --state-dir, --output, ...) do not apply: its output is always
plain timestamped lines, for CI logs.

Job variables: HCL2 variables from NOMAD_VAR_name, --var-file and --var
(later wins), like the nomad CLI. Environment substitution, like envsubst
in a pipeline but never of secrets: "${NAME}" inside a string is replaced
by the environment variable NAME when NAME is one of GitLab's build
identifiers (CI_COMMIT_SHA, CI_COMMIT_SHORT_SHA, CI_COMMIT_REF_SLUG,
CI_REGISTRY_IMAGE, CI_ENVIRONMENT_NAME, CI_PIPELINE_ID, ...) or given with
--env NAME, and is set. Names that look secret (TOKEN, PASSWORD, SECRET,
KEY, JWT, ... in the name; CI_REGISTRY_USER, CI_REPOSITORY_URL) and NOMAD_
names are never substituted, and --env refuses them. Values are escaped:
the string holds exactly the value. ${NAME} outside a string (not in a
comment) is an error. Anything else (${var.x}, ${attr.x},
${NOMAD_PORT_http}, names not set or not allowed) is left for HCL2 and
Nomad. Write $${NAME} to keep a literal ${NAME} for Nomad's runtime.
Secrets of the environment (NOMAD_TOKEN, CI_JOB_TOKEN, ...) are removed
from everything deploy prints.

Guard rails, checked before anything is written: the job needs a namespace
(in the file or --namespace; they must agree), never "general" (the
platform's) or "default"; images need a tag other than latest
(--allow-latest to override); a service without a "prometheus" tag is
warned about (Prometheus will not scrape it).

The job is registered only when the plan has changes, against the plan's
job modify index (someone else's deploy in between is refused). When the
deployment fails: the failing allocations' task events and last log lines
are printed and the job is reverted to its last stable version (not with
--no-revert).

Exit codes: 0 healthy, or no changes; 1 failed (reverted unless
--no-revert); 2 bad input (nothing written); 4 --plan-only with changes.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.JobFile = args[0]
			o.Env = os.Environ()
			o.Out = g.stdout
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := deploy.Run(ctx, o)
			var bad *deploy.InputError
			switch {
			case errors.As(err, &bad):
				return &exitError{code: exitUsage, err: err}
			case err != nil:
				return &exitError{code: exitFailure, err: err}
			case o.PlanOnly && res.Changes:
				return &exitError{code: exitChanges}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.Vars, "var", nil, "job variable `NAME=VALUE` (repeatable)")
	f.StringArrayVar(&o.VarFiles, "var-file", nil, "job variables `FILE`, HCL or JSON (repeatable)")
	f.StringArrayVar(&o.EnvNames, "env", nil, "also substitute ${`NAME`} from the environment, besides the CI build identifiers (repeatable; secret-looking names are refused)")
	f.StringVar(&o.Namespace, "namespace", "", "deploy into `NAMESPACE` (dev or prod): fills the job's, or must agree with it")
	f.BoolVar(&o.Detach, "detach", false, "return once the job is registered")
	f.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "how long the deployment may take to become healthy (a revert after a failure is given at least 1m)")
	f.BoolVar(&o.PlanOnly, "plan-only", false, "stop after the plan: exit 4 when there are changes, 0 when none")
	f.BoolVar(&o.NoRevert, "no-revert", false, "leave a failed deployment as it is")
	f.BoolVar(&o.AllowLatest, "allow-latest", false, "accept :latest and untagged images")
	return cmd
}
