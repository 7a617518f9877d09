package terraform

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	tfjson "github.com/hashicorp/terraform-json"
	"github.com/zclconf/go-cty/cty"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages"
)

func TestFindBinary(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir)
	_, err := findBinary("", dir)
	if err == nil {
		t.Fatal("found a binary on an empty PATH")
	}
	for _, want := range []string{"neither terraform nor tofu", "developer.hashicorp.com/terraform/install", "opentofu.org", `binary = "/path/to/terraform"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	// tofu alone is enough; terraform wins when both exist.
	exe := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tofu := exe("tofu")
	if got, err := findBinary("", dir); err != nil || got != tofu {
		t.Fatalf("findBinary = %q, %v; want %s", got, err, tofu)
	}
	tf := exe("terraform")
	if got, _ := findBinary("", dir); got != tf {
		t.Fatalf("findBinary = %q, want %s", got, tf)
	}

	// A configured path is relative to the configuration file.
	cfgDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(cfgDir, "tools"), 0o755); err != nil {
		t.Fatal(err)
	}
	mine := filepath.Join(cfgDir, "tools", "tf")
	if err := os.WriteFile(mine, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := findBinary("tools/tf", cfgDir); err != nil || got != mine {
		t.Fatalf("findBinary(tools/tf) = %q, %v", got, err)
	}
	if got, err := findBinary("tofu", cfgDir); err != nil || got != tofu {
		t.Fatalf("findBinary(tofu) = %q, %v", got, err)
	}
	if _, err := findBinary("tools/missing", cfgDir); err == nil || !strings.Contains(err.Error(), `binary = "tools/missing"`) {
		t.Fatalf("missing configured binary: %v", err)
	}
	if err := os.Chmod(mine, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := findBinary("tools/tf", cfgDir); err == nil || !strings.Contains(err.Error(), "not an executable") {
		t.Fatalf("non-executable binary: %v", err)
	}
}

func TestEnvironment(t *testing.T) {
	cli := filepath.Join(t.TempDir(), "rc")
	if err := os.WriteFile(cli, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	env, level, path := environment([]string{
		"PATH=/bin", "HCLOUD_TOKEN=abc=def", "TF_VAR_region=fra1", "TF_CLI_ARGS_plan=-refresh=false",
		"TF_LOG=TRACE", "TF_WORKSPACE=prod", "TF_CLI_CONFIG_FILE=" + cli, "CHECKPOINT_DISABLE=",
	}, "/state/terraform", &log)
	if env["HCLOUD_TOKEN"] != "abc=def" || env["PATH"] != "/bin" {
		t.Errorf("credentials and PATH must pass through: %v", env)
	}
	for _, k := range []string{"TF_VAR_region", "TF_CLI_ARGS_plan", "TF_LOG", "TF_WORKSPACE"} {
		if _, ok := env[k]; ok {
			t.Errorf("%s passed to terraform", k)
		}
	}
	if env["CHECKPOINT_DISABLE"] != "1" {
		t.Error("CHECKPOINT_DISABLE not set")
	}
	if env["TF_CLI_CONFIG_FILE"] != cli {
		t.Error("an existing TF_CLI_CONFIG_FILE was dropped")
	}
	if level != "TRACE" || path != "/state/terraform/terraform-debug.log" {
		t.Errorf("log %q %q", level, path)
	}
	if !strings.Contains(log.String(), "TF_CLI_ARGS_plan, TF_VAR_region") {
		t.Errorf("dropped variables not reported: %q", log.String())
	}
	if strings.Contains(log.String(), "abc=def") {
		t.Error("a credential was logged")
	}

	log.Reset()
	env, level, _ = environment([]string{"TF_CLI_CONFIG_FILE=/nonexistent/.terraformrc"}, "/w", &log)
	if _, ok := env["TF_CLI_CONFIG_FILE"]; ok || level != "" {
		t.Errorf("a missing TF_CLI_CONFIG_FILE was kept: %v", env)
	}
	if !strings.Contains(log.String(), "does not exist") {
		t.Errorf("not reported: %q", log.String())
	}
}

func TestVarsJSON(t *testing.T) {
	cfg := &config.TerraformProvider{Vars: map[string]cty.Value{
		"num_servers":      cty.NumberIntVal(3),
		"region":           cty.StringVal("lon1"),
		"vault_ha":         cty.True,
		"tags":             cty.ListVal([]cty.Value{cty.StringVal("a"), cty.StringVal("b")}),
		"sizes":            cty.ObjectVal(map[string]cty.Value{"server": cty.StringVal("s-1vcpu-2gb")}),
		"ssh_allowed_cidr": cty.StringVal("198.51.100.0/24"),
	}}
	b, err := varsJSON(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "num_servers": 3,
  "region": "lon1",
  "sizes": {
    "server": "s-1vcpu-2gb"
  },
  "ssh_allowed_cidr": "198.51.100.0/24",
  "tags": [
    "a",
    "b"
  ],
  "vault_ha": true
}
`
	if string(b) != want {
		t.Fatalf("vars file:\n%s\nwant:\n%s", b, want)
	}
	cfg.Vars = map[string]cty.Value{"bad name": cty.True}
	if _, err := varsJSON(cfg); err == nil || !strings.Contains(err.Error(), `vars.bad name is not a valid`) {
		t.Errorf("bad name: %v", err)
	}
	cfg.Vars = map[string]cty.Value{"x": cty.UnknownVal(cty.String)}
	if _, err := varsJSON(cfg); err == nil {
		t.Error("unknown value accepted")
	}
}

func TestCredentialsAreRefused(t *testing.T) {
	dir := t.TempDir()
	mod := filepath.Join(dir, "mod")
	if err := os.Mkdir(mod, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := &config.TerraformProvider{
		Module:        "mod",
		Vars:          map[string]cty.Value{"do_token": cty.StringVal("x"), "region": cty.StringVal("lon1"), "ssh_public_key": cty.StringVal("ssh-ed25519 AAAA")},
		Backend:       "http",
		BackendConfig: map[string]string{"address": "https://gitlab.example/api", "password": "y"},
	}
	_, err := New(cfg, dir, filepath.Join(dir, "work"), io.Discard)
	if err == nil {
		t.Fatal("credentials in vars and backend_config were accepted")
	}
	for _, want := range []string{"vars.do_token looks like a credential", "backend_config.password looks like a credential", "TF_HTTP_PASSWORD"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	for _, notWant := range []string{"region", "ssh_public_key", "address"} {
		if strings.Contains(err.Error(), notWant) {
			t.Errorf("%s was taken for a credential: %v", notWant, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "work")); err == nil {
		t.Error("New wrote the working directory of a refused configuration")
	}
}

func TestNewChecksTheModule(t *testing.T) {
	dir := t.TempDir()
	_, err := New(&config.TerraformProvider{Module: "terraform/nowhere"}, dir, filepath.Join(dir, "w"), nil)
	if err == nil || !strings.Contains(err.Error(), `module "terraform/nowhere": not a directory`) || !strings.Contains(err.Error(), filepath.Join(dir, "terraform/nowhere")) {
		t.Fatalf("missing module: %v", err)
	}
	if _, err := New(&config.TerraformProvider{}, dir, dir, nil); err == nil || !strings.Contains(err.Error(), "module is not set") {
		t.Fatalf("no module: %v", err)
	}
}

func TestBackendJSON(t *testing.T) {
	b, err := backendJSON(&config.TerraformProvider{Backend: "local"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"local": {`) || !strings.Contains(string(b), `"path": "terraform.tfstate"`) {
		t.Errorf("local backend: %s", b)
	}
	b, err = backendJSON(&config.TerraformProvider{Backend: "http", BackendConfig: map[string]string{"address": "https://x"}})
	if err != nil {
		t.Fatal(err)
	}
	// The settings go to init as -backend-config, not into the file.
	if !strings.Contains(string(b), `"http": {}`) || strings.Contains(string(b), "https://x") {
		t.Errorf("http backend: %s", b)
	}
	if _, err := backendJSON(&config.TerraformProvider{Backend: "local", BackendConfig: map[string]string{"path": "x"}}); err == nil {
		t.Error("backend_config with the local backend accepted")
	}
	if _, err := backendJSON(&config.TerraformProvider{Backend: "s3 bucket"}); err == nil {
		t.Error("a bad backend type accepted")
	}
}

func TestSyncModule(t *testing.T) {
	mod := t.TempDir()
	work := t.TempDir()
	write := func(dir, name, content string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(mod, "main.tf", "# main")
	write(mod, "variables.tf", "# vars")
	write(mod, "modules/net/main.tf", "# net")
	write(mod, "terraform.tfstate", "state left by someone")
	write(mod, "dev.tfvars", "x = 1")
	write(mod, ".terraform/providers/p", "binary")
	write(mod, ".terraform.lock.hcl", "# lock")
	// Terraform's own files in the working directory must survive.
	write(work, "terraform.tfstate", "our state")
	write(work, ".terraform/x", "our plugins")

	r := &Runner{module: mod, dir: work, cfg: &config.TerraformProvider{}}
	if err := r.syncModule(); err != nil {
		t.Fatal(err)
	}
	files := func() []string {
		var out []string
		filepath.WalkDir(work, func(p string, d os.DirEntry, err error) error {
			if !d.IsDir() {
				rel, _ := filepath.Rel(work, p)
				out = append(out, rel)
			}
			return nil
		})
		slices.Sort(out)
		return out
	}
	want := []string{".bootstrap-module-files", ".terraform.lock.hcl", ".terraform/x", "main.tf", "modules/net/main.tf", "terraform.tfstate", "variables.tf"}
	if got := files(); !slices.Equal(got, want) {
		t.Fatalf("working directory: %v, want %v", got, want)
	}
	if b, _ := os.ReadFile(filepath.Join(work, "terraform.tfstate")); string(b) != "our state" {
		t.Fatal("the state was overwritten by the module's")
	}

	// Unchanged module: nothing is rewritten.
	before := map[string]int64{}
	for _, f := range files() {
		fi, _ := os.Stat(filepath.Join(work, f))
		before[f] = fi.ModTime().UnixNano()
	}
	if err := r.syncModule(); err != nil {
		t.Fatal(err)
	}
	for _, f := range files() {
		fi, _ := os.Stat(filepath.Join(work, f))
		if fi.ModTime().UnixNano() != before[f] {
			t.Errorf("%s rewritten", f)
		}
	}

	// A file removed from the module goes from the copy too; a changed one
	// is updated.
	os.Remove(filepath.Join(mod, "variables.tf"))
	write(mod, "main.tf", "# main v2")
	if err := r.syncModule(); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(files(), "variables.tf") {
		t.Error("a removed module file stayed in the copy")
	}
	if b, _ := os.ReadFile(filepath.Join(work, "main.tf")); string(b) != "# main v2" {
		t.Errorf("main.tf = %q", b)
	}
}

func TestSummarise(t *testing.T) {
	rc := func(addr string, mode tfjson.ResourceMode, actions ...tfjson.Action) *tfjson.ResourceChange {
		return &tfjson.ResourceChange{Address: addr, Mode: mode, Change: &tfjson.Change{Actions: actions}}
	}
	plan := &tfjson.Plan{
		ResourceChanges: []*tfjson.ResourceChange{
			rc("digitalocean_droplet.server[0]", tfjson.ManagedResourceMode, tfjson.ActionCreate),
			rc("digitalocean_droplet.server[1]", tfjson.ManagedResourceMode, tfjson.ActionNoop),
			rc("digitalocean_volume.data[0]", tfjson.ManagedResourceMode, tfjson.ActionDelete, tfjson.ActionCreate),
			rc("digitalocean_firewall.clients", tfjson.ManagedResourceMode, tfjson.ActionUpdate),
			rc("digitalocean_droplet.client[2]", tfjson.ManagedResourceMode, tfjson.ActionDelete),
			rc("data.digitalocean_image.debian", tfjson.DataResourceMode, tfjson.ActionRead),
		},
		OutputChanges: map[string]*tfjson.Change{
			"bootstrap_inventory": {Actions: tfjson.Actions{tfjson.ActionUpdate}},
			"unchanged":           {Actions: tfjson.Actions{tfjson.ActionNoop}},
		},
	}
	got := summarise(plan)
	want := []stages.Change{
		{Action: "create", Target: "digitalocean_droplet.server[0]"},
		{Action: "replace", Target: "digitalocean_volume.data[0]"},
		{Action: "update", Target: "digitalocean_firewall.clients"},
		{Action: "delete", Target: "digitalocean_droplet.client[2]"},
		{Action: "update", Target: "output bootstrap_inventory"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("summarise:\n got %v\nwant %v", got, want)
	}
	if got := summarise(&tfjson.Plan{}); len(got) != 0 {
		t.Fatalf("empty plan: %v", got)
	}
}

// A module's output cannot make a node local: `down` would then stop the
// processes under, and remove, a directory of this machine it chose.
func TestOutputRefusesLocal(t *testing.T) {
	r := &Runner{module: "/modules/evil"}
	doc := `{"version": 1, "nodes": [{"name": "server-1", "roles": ["server", "client"], "private_ip": "10.0.0.1", "local": {"root": "/home"}}]}`
	for _, raw := range []string{doc, strconv.Quote(doc)} { // the object, or jsonencode's string
		_, err := r.parseOutput([]byte(raw), "")
		var lf *inventory.LocalFieldError
		if !errors.As(err, &lf) {
			t.Fatalf("parseOutput(%.30s…) = %v, want a *LocalFieldError", raw, err)
		}
		if msg := err.Error(); !strings.Contains(msg, "bootstrap_inventory of module /modules/evil") || !strings.Contains(msg, `node "server-1"`) {
			t.Errorf("message %q does not name the output and the node", msg)
		}
	}
	ok := strings.Replace(doc, `, "local": {"root": "/home"}`, "", 1)
	inv, err := r.parseOutput([]byte(strconv.Quote(ok)), "")
	if err != nil || inv.Nodes[0].Local != nil || inv.Nodes[0].SSH.Port != 22 {
		t.Errorf("parseOutput without local = %+v, %v", inv, err)
	}
}
