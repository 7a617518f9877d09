// Package terraform provisions machines with a Terraform (or OpenTofu)
// module whose output bootstrap_inventory follows the inventory contract
// (terraform/README.md).
//
// The module is copied into a working directory under the state directory,
// together with two generated files: the module's variables
// (bootstrap.auto.tfvars.json) and the state backend
// (bootstrap_override.tf.json). Terraform's state stays in that directory
// unless the configuration names another backend. Cloud credentials are
// never written: Terraform and its providers read them from the environment.
//
// The provision stage uses it like this:
//
//	r, err := terraform.New(cfg.Provider.Terraform, cfg.Dir, e.Path("terraform"), e.Log)
//	changes, err := r.Plan(ctx)  // bootstrap plan: read-only
//	inv, err := r.Apply(ctx)     // bootstrap up: the inventory the module outputs
//	inv, err = r.Inventory(ctx)  // the outputs again, without applying
//	err = r.Destroy(ctx)         // bootstrap down: fails if anything is left
//
// and then waits for the machines with sshwait.Wait. A Runner is for one
// goroutine at a time.
package terraform

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/terraform-exec/tfexec"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
)

// OutputName is the module output that holds the inventory.
const OutputName = "bootstrap_inventory"

// Files the runner generates in the working directory.
const (
	VarsFile     = "bootstrap.auto.tfvars.json"
	BackendFile  = "bootstrap_override.tf.json"
	manifestFile = ".bootstrap-module-files"
	planFile     = "bootstrap.tfplan"
)

// Runner drives one module in one working directory.
type Runner struct {
	tf          *tfexec.Terraform
	bin         string
	module      string // absolute path of the module's source
	dir         string // working directory
	cfg         *config.TerraformProvider
	log         io.Writer
	initDone    bool
	lockTimeout string
}

// New prepares a runner for cfg. configDir resolves a relative module path
// and binary; workDir (normally <state-dir>/terraform) is created if needed.
// Terraform's output is streamed to log. New checks the configuration and
// finds the binary but runs nothing.
func New(cfg *config.TerraformProvider, configDir, workDir string, log io.Writer) (*Runner, error) {
	if cfg == nil {
		return nil, errors.New("terraform provider: no configuration")
	}
	if log == nil {
		log = io.Discard
	}
	module := cfg.Module
	if module == "" {
		return nil, errors.New(`terraform provider: module is not set; set module = "terraform/digitalocean" or another module directory`)
	}
	if !filepath.IsAbs(module) {
		module = filepath.Join(configDir, module)
	}
	if fi, err := os.Stat(module); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("terraform provider: module %q: not a directory (resolved to %s, relative to the configuration file)", cfg.Module, module)
	}
	if err := checkNoCredentials(cfg); err != nil {
		return nil, err
	}
	if _, err := varsJSON(cfg); err != nil {
		return nil, err
	}
	bin, err := findBinary(cfg.Binary, configDir)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(workDir)
	if err != nil {
		return nil, fmt.Errorf("terraform provider: working directory: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("terraform provider: working directory: %w", err)
	}
	tf, err := tfexec.NewTerraform(abs, bin)
	if err != nil {
		return nil, fmt.Errorf("terraform provider: %w", err)
	}
	// terraform-exec copies stdout and stderr from two goroutines.
	log = &lockedWriter{w: log}
	tf.SetStdout(log)
	tf.SetStderr(log)
	env, logLevel, logPath := environment(os.Environ(), abs, log)
	if err := tf.SetEnv(env); err != nil {
		return nil, fmt.Errorf("terraform provider: %w", err)
	}
	if logLevel != "" {
		// terraform-exec blanks TF_LOG so logs cannot mix with its JSON
		// output; a user who asks for logs gets them in a file instead.
		if err := tf.SetLogPath(logPath); err != nil {
			return nil, fmt.Errorf("terraform provider: TF_LOG_PATH: %w", err)
		}
		if err := tf.SetLog(logLevel); err != nil {
			return nil, fmt.Errorf("terraform provider: TF_LOG: %w", err)
		}
	}
	return &Runner{tf: tf, bin: bin, module: module, dir: abs, cfg: cfg, log: log, lockTimeout: "5m"}, nil
}

// Dir is the working directory Terraform runs in.
func (r *Runner) Dir() string { return r.dir }

// Binary is the terraform or tofu executable in use.
func (r *Runner) Binary() string { return r.bin }

// findBinary returns the configured binary, or terraform or tofu from PATH.
func findBinary(configured, configDir string) (string, error) {
	if configured != "" {
		p := configured
		if strings.ContainsRune(p, filepath.Separator) {
			if !filepath.IsAbs(p) {
				p = filepath.Join(configDir, p)
			}
			fi, err := os.Stat(p)
			if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				return "", fmt.Errorf("terraform provider: binary = %q: %s is not an executable file", configured, p)
			}
			return p, nil
		}
		found, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("terraform provider: binary = %q: not found on PATH", configured)
		}
		return found, nil
	}
	for _, name := range []string{"terraform", "tofu"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("terraform provider: neither terraform nor tofu was found on PATH; " +
		"install Terraform (https://developer.hashicorp.com/terraform/install) or OpenTofu (https://opentofu.org/docs/intro/install/), " +
		`or set binary = "/path/to/terraform" in the provider "terraform" block`)
}

// environment builds Terraform's environment from ours. terraform-exec
// refuses variables it manages itself (TF_LOG, TF_CLI_ARGS, TF_VAR_*, ...),
// so those are dropped; TF_LOG and TF_LOG_PATH come back as the log level
// and log file. A TF_CLI_CONFIG_FILE that names a missing file is dropped
// too, so Terraform falls back to its default instead of warning on every
// command.
func environment(environ []string, workDir string, log io.Writer) (env map[string]string, logLevel, logPath string) {
	env = map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	logLevel, logPath = env["TF_LOG"], env["TF_LOG_PATH"]
	if logLevel != "" && logPath == "" {
		logPath = filepath.Join(workDir, "terraform-debug.log")
	}
	var dropped []string
	for _, k := range tfexec.ProhibitedEnv(env) {
		if strings.HasPrefix(k, "TF_VAR_") || strings.HasPrefix(k, "TF_CLI_ARGS") {
			dropped = append(dropped, k)
		}
	}
	tfexec.CleanEnv(env)
	if len(dropped) > 0 {
		sort.Strings(dropped)
		fmt.Fprintf(log, "bootstrap: not passing %s to terraform (set module variables in the provider's vars instead)\n", strings.Join(dropped, ", "))
	}
	if f, ok := env["TF_CLI_CONFIG_FILE"]; ok {
		if _, err := os.Stat(f); err != nil {
			fmt.Fprintf(log, "bootstrap: TF_CLI_CONFIG_FILE=%s does not exist; using terraform's default CLI configuration\n", f)
			delete(env, "TF_CLI_CONFIG_FILE")
		}
	}
	env["CHECKPOINT_DISABLE"] = "1"
	return env, logLevel, logPath
}

var credentialRE = regexp.MustCompile(`(?i)(token|password|passwd|secret|access_key|private_key|api_key|credentials)`)

// checkNoCredentials refuses credentials in vars and backend_config: both
// are written to disk (the vars file, Terraform's backend cache in
// .terraform/), and credentials must only ever live in the environment.
func checkNoCredentials(cfg *config.TerraformProvider) error {
	var errs []error
	for _, k := range sortedKeys(cfg.Vars) {
		if credentialRE.MatchString(k) {
			errs = append(errs, fmt.Errorf("terraform provider: vars.%s looks like a credential; credentials are read from the environment only (e.g. DIGITALOCEAN_TOKEN, HCLOUD_TOKEN), never passed as variables, because variables are written to %s", k, VarsFile))
		}
	}
	for _, k := range sortedKeys(cfg.BackendConfig) {
		if credentialRE.MatchString(k) {
			errs = append(errs, fmt.Errorf("terraform provider: backend_config.%s looks like a credential; Terraform stores backend_config in .terraform/ in plain text, so set it in the environment instead (for the http backend: TF_HTTP_USERNAME and TF_HTTP_PASSWORD)", k))
		}
	}
	return errors.Join(errs...)
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// varsJSON encodes the module variables as a .tfvars.json document.
func varsJSON(cfg *config.TerraformProvider) ([]byte, error) {
	vars := map[string]json.RawMessage{}
	for _, k := range sortedKeys(cfg.Vars) {
		if !identRE.MatchString(k) {
			return nil, fmt.Errorf("terraform provider: vars.%s is not a valid Terraform variable name", k)
		}
		v := cfg.Vars[k]
		if !v.IsWhollyKnown() {
			return nil, fmt.Errorf("terraform provider: vars.%s has no known value", k)
		}
		b, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			return nil, fmt.Errorf("terraform provider: vars.%s: %w", k, err)
		}
		vars[k] = b
	}
	b, err := json.MarshalIndent(vars, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// backendJSON is the override file that selects the state backend. An
// override file replaces whatever backend the module itself declares.
func backendJSON(cfg *config.TerraformProvider) ([]byte, error) {
	backend := cfg.Backend
	if backend == "" {
		backend = "local"
	}
	if !identRE.MatchString(backend) {
		return nil, fmt.Errorf("terraform provider: backend = %q is not a Terraform backend type", backend)
	}
	settings := map[string]any{}
	if backend == "local" {
		if len(cfg.BackendConfig) > 0 {
			return nil, errors.New(`terraform provider: backend_config is set but backend = "local" keeps the state in the state directory; set backend = "http" (or another type) or remove backend_config`)
		}
		settings["path"] = "terraform.tfstate"
	}
	doc := map[string]any{"terraform": map[string]any{"backend": map[string]any{backend: settings}}}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// prepare brings the working directory up to date with the module and the
// configuration. A file is only written when its content changes, so a
// converged run writes nothing.
func (r *Runner) prepare() error {
	if err := r.syncModule(); err != nil {
		return err
	}
	vars, err := varsJSON(r.cfg)
	if err != nil {
		return err
	}
	if err := writeIfChanged(filepath.Join(r.dir, VarsFile), vars, 0o600); err != nil {
		return err
	}
	backend, err := backendJSON(r.cfg)
	if err != nil {
		return err
	}
	return writeIfChanged(filepath.Join(r.dir, BackendFile), backend, 0o600)
}

// syncModule copies the module into the working directory. The files it
// copied last time are listed in a manifest, so files removed from the
// module are removed from the copy as well, without touching Terraform's
// own files (.terraform/, the state, the lock file).
func (r *Runner) syncModule() error {
	var files []string
	err := filepath.WalkDir(r.module, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(r.module, path)
		name := d.Name()
		if d.IsDir() {
			if rel != "." && (name == ".terraform" || strings.HasPrefix(name, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		// Terraform's own files and any state or variables the user left in
		// the module directory are not part of the module.
		if strings.HasPrefix(name, ".") && name != ".terraform.lock.hcl" ||
			strings.Contains(name, ".tfstate") || strings.HasSuffix(name, ".tfvars") || strings.HasSuffix(name, ".tfvars.json") ||
			name == VarsFile || name == BackendFile || name == planFile {
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		files = append(files, rel)
		return nil
	})
	if err != nil {
		return fmt.Errorf("terraform provider: read module %s: %w", r.module, err)
	}
	manifest := filepath.Join(r.dir, manifestFile)
	old, err := os.ReadFile(manifest)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("terraform provider: %w", err)
	}
	for _, rel := range strings.Split(strings.TrimSpace(string(old)), "\n") {
		if rel == "" || slices.Contains(files, rel) || !filepath.IsLocal(rel) {
			continue
		}
		if err := os.Remove(filepath.Join(r.dir, rel)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("terraform provider: remove %s from the module copy: %w", rel, err)
		}
	}
	for _, rel := range files {
		b, err := os.ReadFile(filepath.Join(r.module, rel))
		if err != nil {
			return fmt.Errorf("terraform provider: read module: %w", err)
		}
		dst := filepath.Join(r.dir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return fmt.Errorf("terraform provider: %w", err)
		}
		if err := writeIfChanged(dst, b, 0o600); err != nil {
			return err
		}
	}
	return writeIfChanged(manifest, []byte(strings.Join(files, "\n")+"\n"), 0o600)
}

func writeIfChanged(path string, data []byte, perm os.FileMode) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	if err := fsutil.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("terraform provider: %w", err)
	}
	return nil
}

// init runs terraform init once per runner. It is idempotent: with the
// providers already installed it only checks them.
func (r *Runner) init(ctx context.Context) error {
	if r.initDone {
		return nil
	}
	if err := r.prepare(); err != nil {
		return err
	}
	opts := []tfexec.InitOption{tfexec.Upgrade(false)}
	for _, k := range sortedKeys(r.cfg.BackendConfig) {
		opts = append(opts, tfexec.BackendConfig(k+"="+r.cfg.BackendConfig[k]))
	}
	if err := r.tf.Init(ctx, opts...); err != nil {
		msg := "terraform init in " + r.dir
		if strings.Contains(err.Error(), "Backend configuration changed") {
			msg += " (the backend changed since the last run: move the state with `terraform init -migrate-state` in that directory, or restore the old backend settings)"
		}
		return fmt.Errorf("%s: %w", msg, err)
	}
	r.initDone = true
	return nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
