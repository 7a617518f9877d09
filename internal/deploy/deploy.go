// Package deploy deploys an application's Nomad job from a CI pipeline:
// render the job's variables, parse it through the server, check the
// platform's guard rails, validate, plan, register against the plan's index,
// follow the deployment until it is healthy, and revert to the last stable
// version when it is not. It needs only the Nomad address, a token and the
// CA (NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT), never the platform's
// configuration or state, so that it runs inside a CI job.
package deploy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/nomadjob"
	"github.com/platform-bootstrap/bootstrap/internal/secrets"
)

// Options are the inputs of a deploy.
type Options struct {
	JobFile   string
	Vars      []string // NAME=VALUE, like `nomad job run -var`
	VarFiles  []string
	Namespace string // fills or must agree with the job's namespace

	Detach      bool          // return once registered
	PlanOnly    bool          // stop after the plan
	NoRevert    bool          // leave a failed deployment as it is
	AllowLatest bool          // accept :latest and untagged images
	Timeout     time.Duration // for the deployment to become healthy (default 10m)

	// Env is the environment: NOMAD_* connection settings, NOMAD_VAR_*
	// job variables and the ${NAME} substitutions (os.Environ() in the
	// command). The values of its secret-looking variables (IsSecretName,
	// NOMAD_TOKEN among them) never appear in Out or in Run's error.
	Env []string
	// EnvNames are substituted for ${NAME} besides BuildVars (--env).
	// CheckEnvName refuses Nomad's and secret-looking names.
	EnvNames []string
	Out      io.Writer
}

// Result is what a deploy did.
type Result struct {
	JobID     string
	Namespace string
	Changes   bool   // the plan had changes
	Version   uint64 // the job's version at the end
	Reverted  bool
}

// InputError is bad input: an unreadable file, an HCL error, a guard rail.
// Nothing was written to Nomad.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func badInput(format string, args ...any) error {
	return &InputError{fmt.Errorf(format, args...)}
}

// ErrFailed means the deployment did not become healthy; the error wrapping
// it says whether it was reverted.
var ErrFailed = errors.New("deployment failed")

// Client returns a Nomad client configured from the environment variables
// the nomad CLI uses for the connection — NOMAD_ADDR, NOMAD_TOKEN,
// NOMAD_CACERT, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY and
// NOMAD_TLS_SERVER_NAME — and nothing else: no NOMAD_NAMESPACE or
// NOMAD_REGION (the namespace is the job's), no NOMAD_SKIP_VERIFY.
//
// The server's certificate is verified against NOMAD_TLS_SERVER_NAME
// (`bootstrap env` prints it: server.<region>.nomad). Without it, an
// address that is an IP address must still be answered by a certificate
// that names a Nomad server: the platform's PKI puts any IP address in a
// client node's certificate too, so the address alone would let a client
// node pose as the server and receive the deploy token.
func Client(env []string) (*nomadapi.Client, error) {
	e := envMap(env)
	addr := e["NOMAD_ADDR"]
	if addr == "" {
		return nil, badInput("NOMAD_ADDR is not set: set it (and NOMAD_TOKEN, NOMAD_CACERT) to the platform's Nomad, e.g. as GitLab CI/CD variables")
	}
	cfg := &nomadapi.Config{
		Address:  addr,
		SecretID: e["NOMAD_TOKEN"],
		TLSConfig: &nomadapi.TLSConfig{
			CACert:        e["NOMAD_CACERT"],
			ClientCert:    e["NOMAD_CLIENT_CERT"],
			ClientKey:     e["NOMAD_CLIENT_KEY"],
			TLSServerName: e["NOMAD_TLS_SERVER_NAME"],
		},
	}
	for _, f := range []string{"NOMAD_CACERT", "NOMAD_CLIENT_CERT", "NOMAD_CLIENT_KEY"} {
		if p := e[f]; p != "" {
			if _, err := os.Stat(p); err != nil {
				return nil, badInput("%s: %w", f, err)
			}
		}
	}
	hc, err := httpClient(addr, cfg.TLSConfig)
	if err != nil {
		return nil, badInput("nomad client for %s: %w", addr, err)
	}
	cfg.HttpClient = hc
	c, err := nomadapi.NewClient(cfg)
	if err != nil {
		return nil, badInput("nomad client for %s: %w", addr, err)
	}
	return c, nil
}

// httpClient returns the HTTP client for Nomad at addr with tc applied; the
// api package ignores its TLSConfig once it is given a client, and cannot
// require a server's name by itself.
func httpClient(addr string, tc *nomadapi.TLSConfig) (*http.Client, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("invalid address: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	// HTTP/1, as the api package's own client: its exec websockets need it.
	tr.ForceAttemptHTTP2 = false
	hc := &http.Client{Transport: tr}
	if err := nomadapi.ConfigureTLS(hc, tc); err != nil {
		return nil, err
	}
	if u.Scheme == "https" && tc.TLSServerName == "" && net.ParseIP(u.Hostname()) != nil {
		apitls.RequireServer(tr.TLSClientConfig)
		verify := tr.TLSClientConfig.VerifyConnection
		tr.TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := verify(cs); err != nil {
				return fmt.Errorf("%w; set NOMAD_TLS_SERVER_NAME to the name the servers' certificates carry (`bootstrap env` prints it)", err)
			}
			return nil
		}
	}
	return hc, nil
}

// Run deploys opts.JobFile. Errors are *InputError (nothing written),
// wrap ErrFailed (the deployment failed), or are anything else that went
// wrong talking to Nomad.
func Run(ctx context.Context, opts Options) (Result, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	// Everything deploy prints — the diff, Nomad's errors, the failing
	// allocations' logs — can echo a credential of the CI job: a task
	// that logs its environment, a job that put a secret in its meta, a
	// URL with a token in it. The CI log is readable by more people than
	// the secrets, so they are removed on the way out.
	red := secrets.NewRedactor()
	red.Add(secretValues(opts.Env)...)
	out := red.Writer(opts.Out)
	d := &deployer{opts: opts, p: newPrinter(out)}
	res, err := d.run(ctx)
	// The printer ends every line with "\n", so nothing should be held
	// back; a failure to write the log is not a failed deploy.
	_ = out.Close()
	return res, redactError(err, red)
}

// secretValues returns the values of env's secret-looking variables:
// NOMAD_TOKEN, CI_JOB_TOKEN, CI_REGISTRY_PASSWORD, CI_REPOSITORY_URL (which
// holds the job token) and any name IsSecretName matches.
func secretValues(env []string) []string {
	var out []string
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && v != "" && IsSecretName(k) {
			out = append(out, v)
		}
	}
	return out
}

// redactedError is an error whose text has the run's secrets removed;
// errors.Is and errors.As still see what it wraps.
type redactedError struct {
	err error
	r   *secrets.Redactor
}

func (e *redactedError) Error() string { return e.r.String(e.err.Error()) }
func (e *redactedError) Unwrap() error { return e.err }

// redactError redacts err's text, keeping an *InputError outermost so
// that errors.As finds one whose text is redacted too.
func redactError(err error, r *secrets.Redactor) error {
	if err == nil {
		return nil
	}
	re := &redactedError{err: err, r: r}
	var ie *InputError
	if errors.As(err, &ie) {
		return &InputError{re}
	}
	return re
}

type deployer struct {
	opts Options
	p    *printer
	nc   *nomadapi.Client
	// interrupted reports whether the caller gave up (a signal, a
	// cancelled CI job) as opposed to the deployment timing out: an
	// interrupted deploy leaves Nomad alone.
	interrupted func() bool
}

func (d *deployer) run(ctx context.Context) (Result, error) {
	o := d.opts
	var res Result
	outer := ctx // ctx gets the deployment's timeout below
	d.interrupted = func() bool { return outer.Err() != nil }

	// Everything up to the plan only reads: a refusal leaves Nomad as it
	// was.
	for _, n := range o.EnvNames {
		if err := CheckEnvName(n); err != nil {
			return res, &InputError{err}
		}
	}
	if o.Namespace != "" {
		if err := checkNamespace(o.Namespace, "--namespace"); err != nil {
			return res, &InputError{err}
		}
	}
	src, err := os.ReadFile(o.JobFile)
	if err != nil {
		return res, badInput("%w", err)
	}
	src, sub, err := SubstituteEnv(o.JobFile, src, o.Env, o.EnvNames)
	if err != nil {
		return res, &InputError{err}
	}
	for _, l := range []struct {
		names []string
		what  string
	}{
		{sub.Substituted, "substituted from the environment"},
		{sub.Left, "left for Nomad's runtime interpolation (not set here)"},
		{sub.NotAllowed, "left for Nomad's runtime interpolation (set here, but only CI build identifiers and --env names are substituted)"},
		{sub.Secret, "left for Nomad's runtime interpolation (secret-looking names are never substituted)"},
	} {
		if len(l.names) > 0 {
			d.p.Printf("%s: %s: %s", o.JobFile, l.what, strings.Join(l.names, ", "))
		}
	}
	vars, err := RenderVariables(o.Env, o.VarFiles, o.Vars)
	if err != nil {
		return res, &InputError{err}
	}
	if names := vars.Names(); len(names) > 0 {
		d.p.Printf("job variables: %s", strings.Join(names, ", "))
	}
	if d.nc, err = Client(o.Env); err != nil {
		return res, err
	}
	d.p.Printf("nomad: %s", d.nc.Address())

	job, err := d.parse(ctx, src, vars)
	if err != nil {
		return res, err
	}
	res.JobID = name(job.ID)
	if err := settleNamespace(job, o.Namespace); err != nil {
		return res, &InputError{fmt.Errorf("%s: %w", o.JobFile, err)}
	}
	ns := *job.Namespace
	res.Namespace = ns
	if err := checkServiceNames(job, ns); err != nil {
		return res, &InputError{fmt.Errorf("%s: %w", o.JobFile, err)}
	}
	if !o.AllowLatest {
		if err := checkImages(job); err != nil {
			return res, &InputError{fmt.Errorf("%s: %w", o.JobFile, err)}
		}
	}
	for _, w := range metricsWarnings(job) {
		d.p.Printf("warning: %s", w)
	}
	d.p.Printf("job %q in namespace %q", res.JobID, ns)

	wo := (&nomadapi.WriteOptions{Namespace: ns}).WithContext(ctx)
	val, _, err := d.nc.Jobs().Validate(job, wo)
	if err != nil {
		return res, d.apiError("validate", err)
	}
	if val.Warnings != "" {
		d.p.Printf("validate: warnings: %s", val.Warnings)
	}
	if len(val.ValidationErrors) > 0 || val.Error != "" {
		errs := val.ValidationErrors
		if len(errs) == 0 {
			errs = []string{val.Error}
		}
		return res, badInput("%s: the job is invalid:\n  %s", o.JobFile, strings.Join(errs, "\n  "))
	}
	d.p.Printf("validate: ok")

	plan, err := nomadjob.Plan(ctx, d.nc, job)
	if err != nil {
		return res, d.apiError("plan", err)
	}
	if plan.Warnings != "" {
		d.p.Printf("plan: warnings: %s", plan.Warnings)
	}
	res.Changes = nomadjob.Changed(plan)
	if !res.Changes {
		d.p.Printf("plan: no changes")
		return d.unchanged(ctx, res)
	}
	d.p.Printf("plan:\n%s", nomadjob.FormatDiff(plan.Diff))
	for tg, m := range plan.FailedTGAllocs {
		d.p.Printf("plan: warning: group %q would not be placed: %s", tg, placementFailure(m))
	}
	if o.PlanOnly {
		d.p.Printf("plan-only: changes pending, nothing registered")
		return res, nil
	}

	reg, err := nomadjob.Register(ctx, d.nc, job, plan)
	if err != nil {
		if errors.Is(err, nomadjob.ErrChanged) {
			return res, fmt.Errorf("register: run again to plan against the new version: %w", err)
		}
		return res, d.apiError("register", err)
	}
	if reg.Warnings != "" {
		d.p.Printf("register: warnings: %s", reg.Warnings)
	}
	d.p.Printf("registered: evaluation %s", nomadjob.Short(reg.EvalID))
	if o.Detach {
		d.p.Printf("detached: follow it with `nomad job status -namespace=%s %s`", ns, res.JobID)
		return res, nil
	}

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	f := &follower{d: d, jobID: res.JobID, ns: ns, timeout: o.Timeout}
	return f.follow(ctx, res, reg.EvalID, reg.JobModifyIndex)
}

// parse turns the rendered job into an api.Job on the server (which runs
// Nomad's own HCL2 parser, so the job means exactly what `nomad job run`
// would make of it). The server checks parse-job in the request's
// namespace, which is not known before the job is parsed unless
// --namespace is given: then try the namespaces the token can see; parsing
// gives the same job in any of them.
func (d *deployer) parse(ctx context.Context, src []byte, vars Variables) (*nomadapi.Job, error) {
	jobLines := strings.Count(string(src), "\n") + 1
	content, varLines := vars.content(jobLines + 2)
	req := &nomadapi.JobsParseRequest{JobHCL: string(src), Variables: content}

	candidates := []string{d.opts.Namespace}
	if d.opts.Namespace == "" {
		list, _, err := d.nc.Namespaces().List((&nomadapi.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return nil, d.apiError("list namespaces", err)
		}
		candidates = candidates[:0]
		for _, ns := range list {
			candidates = append(candidates, ns.Name)
		}
		if len(candidates) == 0 {
			return nil, errors.New("parse: the token can see no namespace: is NOMAD_TOKEN the CI deploy token?")
		}
	}
	var lastErr error
	for _, ns := range candidates {
		var job nomadapi.Job
		_, err := d.nc.Raw().Write("/v1/jobs/parse", req, &job, (&nomadapi.WriteOptions{Namespace: ns}).WithContext(ctx))
		if err == nil {
			return &job, nil
		}
		var re nomadapi.UnexpectedResponseError
		if errors.As(err, &re) && re.StatusCode() == 400 {
			return nil, &InputError{parseError(d.opts.JobFile, jobLines, varLines, re.Body())}
		}
		if !isPermissionDenied(err) {
			return nil, d.apiError("parse", err)
		}
		lastErr = err
	}
	return nil, d.apiError("parse", lastErr)
}

// inputPos matches the server's positions in the job and the variables,
// both named input.hcl: "input.hcl:12,3-9" or "input.hcl:3,1-4,2".
var inputPos = regexp.MustCompile(`input\.hcl:(\d+)(,\d+(?:-\d+(?:,\d+)?)?)?`)

// parseError rewrites a parse error of the server to name the job file
// (or the variable's source) and keeps its line and column.
func parseError(file string, jobLines int, varLines map[int]string, body string) error {
	msg := strings.TrimSpace(body)
	msg = strings.TrimPrefix(msg, "Failed to parse job: ")
	msg = inputPos.ReplaceAllStringFunc(msg, func(m string) string {
		sm := inputPos.FindStringSubmatch(m)
		line, _ := strconv.Atoi(sm[1])
		if line <= jobLines {
			return file + ":" + sm[1] + sm[2]
		}
		if src, ok := varLines[line]; ok {
			return src
		}
		return "job variables"
	})
	return fmt.Errorf("%s", msg)
}

func isPermissionDenied(err error) bool {
	var re nomadapi.UnexpectedResponseError
	if errors.As(err, &re) {
		return re.StatusCode() == 403
	}
	return err != nil && strings.Contains(err.Error(), "Permission denied")
}

// apiError wraps an API failure; a refused token is said plainly.
func (d *deployer) apiError(what string, err error) error {
	if isPermissionDenied(err) {
		return fmt.Errorf("%s: permission denied: NOMAD_TOKEN must be the CI deploy token (or one allowed to %s jobs in this namespace): %w", what, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// unchanged handles a plan without changes: nothing is registered (no new
// version). A deployment of this version still in progress (a previous
// run that was detached or interrupted) is followed; one that failed is
// reported.
func (d *deployer) unchanged(ctx context.Context, res Result) (Result, error) {
	q := (&nomadapi.QueryOptions{Namespace: res.Namespace}).WithContext(ctx)
	job, _, err := d.nc.Jobs().Info(res.JobID, q)
	if err != nil {
		return res, d.apiError("read job", err)
	}
	res.Version = *job.Version
	if d.opts.PlanOnly || d.opts.Detach {
		d.p.Printf("job %q is at version %d: nothing to do", res.JobID, res.Version)
		return res, nil
	}
	dep, _, err := d.nc.Jobs().LatestDeployment(res.JobID, q)
	if err != nil {
		return res, d.apiError("read deployment", err)
	}
	if dep == nil || dep.JobVersion != res.Version {
		d.p.Printf("job %q is at version %d: nothing to do", res.JobID, res.Version)
		return res, nil
	}
	switch dep.Status {
	case nomadapi.DeploymentStatusRunning, nomadapi.DeploymentStatusPaused, nomadapi.DeploymentStatusPending:
		d.p.Printf("job %q is at version %d, whose deployment %s is still %s: following it", res.JobID, res.Version, nomadjob.Short(dep.ID), dep.Status)
		ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
		defer cancel()
		f := &follower{d: d, jobID: res.JobID, ns: res.Namespace, timeout: d.opts.Timeout}
		return f.watch(ctx, res, dep.ID, res.Version)
	case nomadapi.DeploymentStatusFailed, nomadapi.DeploymentStatusCancelled:
		return res, fmt.Errorf("%w: job %q is already at this version %d, whose deployment %s %s (%s); fix the job, or redeploy the last good one", ErrFailed, res.JobID, res.Version, nomadjob.Short(dep.ID), dep.Status, dep.StatusDescription)
	}
	d.p.Printf("job %q is at version %d (deployment %s %s): nothing to do", res.JobID, res.Version, nomadjob.Short(dep.ID), dep.Status)
	return res, nil
}

// placementFailure summarises why the scheduler could not place a group.
func placementFailure(m *nomadapi.AllocationMetric) string {
	if m == nil {
		return "no details"
	}
	parts := []string{fmt.Sprintf("%d of %d evaluated node(s) usable", max(0, m.NodesEvaluated-m.NodesFiltered-m.NodesExhausted), m.NodesEvaluated)}
	for k, v := range m.ConstraintFiltered {
		parts = append(parts, fmt.Sprintf("%d filtered by %s", v, k))
	}
	for k, v := range m.ClassFiltered {
		parts = append(parts, fmt.Sprintf("%d filtered by class %s", v, k))
	}
	for k, v := range m.DimensionExhausted {
		parts = append(parts, fmt.Sprintf("%d exhausted on %s", v, k))
	}
	if m.NodesEvaluated == 0 {
		parts = []string{"no node is available"}
	}
	return strings.Join(parts, ", ")
}
