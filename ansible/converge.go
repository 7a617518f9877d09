package ansible

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/tools"
)

// Play is one converge of a stage's part of the playbook.
type Play struct {
	// Tag selects the plays of site.yml (vault, consul, nomad).
	Tag string
	// Hosts limits the run (empty: every host of the tagged plays).
	Hosts []string
	// Roles are the roles the tagged plays use; their files are part of the
	// digest.
	Roles []string
	// Vars are extra variables for every host.
	Vars map[string]any
	// Secrets are variables that must never be printed: written to a 0600
	// file in the secret store, passed with -e @file, part of the digest
	// only as a hash.
	Secrets map[string]string
}

// digestNote is the stage's note of its play's digest: its own business,
// not an output.
func digestNote(tag string) string { return "ansible_" + tag + "_digest" }

// Pending reports why the play must run ("" when its inputs are unchanged
// since its last successful run). Callers also check that the services it
// manages answer: a digest says nothing about a process that died.
func Pending(e *stages.Env, inv *inventory.Inventory, p Play) (string, error) {
	d, err := digest(e, inv, p)
	if err != nil {
		return "", err
	}
	switch e.Note(digestNote(p.Tag)) {
	case "":
		return "first run", nil
	case d:
		return "", nil
	}
	return "configuration or roles changed", nil
}

func digest(e *stages.Env, inv *inventory.Inventory, p Play) (string, error) {
	ai := BuildInventory(e, inv, p.Vars)
	keys := make([]string, 0, len(p.Secrets))
	for k := range p.Secrets {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, p.Secrets[k])
	}
	return Digest(p.Roles, map[string]any{"inventory": ai, "hosts": p.Hosts, "secrets": hex.EncodeToString(h.Sum(nil))})
}

// Converge runs the play and records its digest.
func Converge(ctx context.Context, e *stages.Env, inv *inventory.Inventory, p Play) error {
	d, err := digest(e, inv, p)
	if err != nil {
		return err
	}
	ai := BuildInventory(e, inv, p.Vars)
	if err := checkBinaries(ai, p.Hosts, p.Roles); err != nil {
		return err
	}
	r, err := prepare(e, inv, p.Tag, p.Vars)
	if err != nil {
		return err
	}
	if len(p.Secrets) > 0 {
		name := "ansible/" + p.Tag + "-vars.json"
		sb, err := json.Marshal(p.Secrets)
		if err != nil {
			return err
		}
		if err := e.Secrets.Put(name, string(sb)); err != nil {
			return err
		}
		r.VarsFiles = append(r.VarsFiles, e.Secrets.Path(name))
	}
	if err := r.Run(ctx, "site.yml", []string{p.Tag}, p.Hosts); err != nil {
		return err
	}
	return e.SetNote(digestNote(p.Tag), d)
}

// roleBinaries are the programs a role installs from bin_dir.
var roleBinaries = map[string]string{
	"vault":           "vault",
	"consul":          "consul",
	"nomad":           "nomad",
	"consul_template": "consul-template",
}

// checkBinaries makes sure that the bin_dir of every host that installs
// from one holds the roles' programs, before Ansible starts: one clear error
// instead of a failed task per node.
func checkBinaries(ai Inventory, hosts, roles []string) error {
	for name, v := range ai.Hosts {
		if len(hosts) > 0 && !slices.Contains(hosts, name) {
			continue
		}
		dir, _ := v["bin_dir"].(string)
		if v["install_method"] != "binary" || dir == "" {
			continue
		}
		for _, role := range roles {
			bin, ok := roleBinaries[role]
			if !ok {
				continue
			}
			if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
				return fmt.Errorf("%s: %s is missing: run `make tools` or set bin_dir to the directory holding vault, consul, nomad and consul-template", name, filepath.Join(dir, bin))
			}
		}
	}
	return nil
}

// Teardown stops the platform's services on every node and removes what the
// roles installed (teardown.yml).
func Teardown(ctx context.Context, e *stages.Env, inv *inventory.Inventory) error {
	r, err := prepare(e, inv, "teardown", nil)
	if err != nil {
		return err
	}
	return r.Run(ctx, "teardown.yml", nil, nil)
}

// prepare writes the playbooks and the inventory-<name>.json of a run to the
// state directory and returns a runner that reports progress as steps.
func prepare(e *stages.Env, inv *inventory.Inventory, name string, vars map[string]any) (*Runner, error) {
	dir := e.Path("ansible")
	if err := Extract(dir); err != nil {
		return nil, err
	}
	invFile := filepath.Join(dir, "inventory-"+name+".json")
	b, err := json.MarshalIndent(BuildInventory(e, inv, vars), "", "  ")
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFile(invFile, b, 0o600); err != nil {
		return nil, err
	}
	return &Runner{
		Dir:           dir,
		InventoryFile: invFile,
		Log:           e.Log,
		Progress:      func(task string) { e.Step("ansible: %s", task) },
		SSH:           slices.ContainsFunc(inv.Nodes, func(n inventory.Node) bool { return n.Local == nil }),
	}, nil
}

// BuildInventory turns the inventory contract into Ansible's: one host per
// node with how to reach it, groups servers/clients/vault, and the versions
// and settings every role reads.
func BuildInventory(e *stages.Env, inv *inventory.Inventory, extra map[string]any) Inventory {
	ai := Inventory{
		Hosts:  map[string]map[string]any{},
		Groups: map[string][]string{"servers": nil, "clients": nil, "vault": nil},
		Vars:   map[string]any{},
	}
	for _, n := range inv.Nodes {
		ai.Hosts[n.Name] = HostVars(e, n)
		for _, r := range n.Roles {
			g := map[string]string{inventory.RoleServer: "servers", inventory.RoleClient: "clients", inventory.RoleVault: "vault"}[r]
			ai.Groups[g] = append(ai.Groups[g], n.Name)
		}
	}
	v := tools.Versions()
	cfg := e.Config
	ai.Vars["vault_version"] = v["VAULT_VERSION"]
	ai.Vars["consul_version"] = v["CONSUL_VERSION"]
	ai.Vars["nomad_version"] = v["NOMAD_VERSION"]
	ai.Vars["consul_template_version"] = v["CONSUL_TEMPLATE_VERSION"]
	ai.Vars["datacenter"] = cfg.Datacenter
	ai.Vars["region"] = cfg.Region
	ai.Vars["consul_domain"] = cfg.Consul.Domain
	ai.Vars["consul_ui"] = cfg.Consul.UI
	ai.Vars["bootstrap_tls_dir"] = e.Path("tls")
	ai.Vars["bootstrap_secret_dir"] = e.Secrets.Dir()
	for k, val := range extra {
		ai.Vars[k] = val
	}
	return ai
}

// HostVars says how Ansible reaches a node and how the node runs services.
func HostVars(e *stages.Env, n inventory.Node) map[string]any {
	v := map[string]any{
		"node_ip":        n.PrivateIP,
		"node_public_ip": n.PublicIP,
	}
	if n.Local != nil {
		v["ansible_connection"] = "local"
		v["ansible_python_interpreter"] = "/usr/bin/python3"
		v["service_manager"] = "process"
		v["install_method"] = "binary"
		v["bin_dir"] = n.Local.BinDir
		v["node_root"] = n.Local.Root
		if n.Local.MinDynamicPort > 0 {
			v["nomad_min_dynamic_port"] = n.Local.MinDynamicPort
			v["nomad_max_dynamic_port"] = n.Local.MaxDynamicPort
		}
		return v
	}
	v["ansible_connection"] = "ssh"
	v["ansible_host"] = n.APIAddress()
	v["ansible_user"] = n.SSH.User
	v["ansible_port"] = n.SSH.Port
	v["ansible_ssh_private_key_file"] = n.SSH.PrivateKeyFile
	v["ansible_ssh_common_args"] = "-o UserKnownHostsFile=" + KnownHostsFile(e) + " -o StrictHostKeyChecking=yes"
	v["ansible_python_interpreter"] = "/usr/bin/python3"
	if n.SSH.User != "root" {
		v["ansible_become"] = true
	}
	m := e.Config.Provider.Machines()
	v["service_manager"] = m.ServiceManager
	v["install_method"] = m.InstallMethod
	if m.InstallMethod == "binary" {
		dir := m.BinDir
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(e.Config.Dir, dir)
		}
		v["bin_dir"] = dir
	}
	if m.ServiceManager == "process" {
		v["node_root"] = m.NodeRoot + "/" + n.Name
	}
	return v
}

// KnownHostsFile is where the SSH host keys of the machines are recorded on
// first contact.
func KnownHostsFile(e *stages.Env) string { return e.Path("ssh", "known_hosts") }
