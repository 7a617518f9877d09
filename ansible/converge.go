package ansible

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/tools"
)

// Play is one converge of a stage's part of the playbook.
type Play struct {
	// Tag selects the plays of site.yml (vault, consul, nomad).
	Tag string
	// Hosts are the nodes the play configures (empty: every node).
	Hosts []string
	// Roles are the roles the tagged plays use; their files are part of the
	// digest.
	Roles []string
	// Vars are extra variables for every host.
	Vars map[string]any
	// ServerVars are extra variables for the servers alone: a change to
	// one leaves the other nodes' digests, and the other nodes, alone.
	ServerVars map[string]any
	// Secrets are variables that must never be printed: written to a 0600
	// file in the secret store, passed with -e @file, part of the digest
	// only as a hash.
	Secrets map[string]string
	// NodeSecrets are secrets with a value per node (variable → node →
	// value), passed as one object per variable. A node's digest covers
	// only its own value, so a new node's token changes no other node.
	NodeSecrets map[string]map[string]string
	// Leader is the node whose server leads the cluster, if any answered:
	// site.yml restarts the servers one at a time and this one last, after
	// handing its leadership to another server with LeaderToken (a
	// management token, passed as a secret). Neither is part of the
	// digest: they change nothing on the nodes.
	Leader, LeaderToken string
}

// digestNote is the stage's note of its nodes' digests (a JSON object, node
// → digest of the play's inputs for that node): its own business, not an
// output.
func digestNote(tag string) string { return "ansible_" + tag + "_digest" }

// Pending reports, for each node of the play whose inputs changed since the
// play last succeeded on it, why. Callers also check that the services it
// manages answer: a digest says nothing about a process that died.
func Pending(e *stages.Env, inv *inventory.Inventory, p Play) (map[string]string, error) {
	want, err := digests(e, inv, p)
	if err != nil {
		return nil, err
	}
	note := e.Note(digestNote(p.Tag))
	var have map[string]string
	if json.Unmarshal([]byte(note), &have) != nil {
		have = nil // none yet, or one digest for the whole play (older versions)
	}
	var haveBins map[string][]string
	if json.Unmarshal([]byte(e.Note(binariesNote(p.Tag))), &haveBins) != nil {
		haveBins = nil // none yet (older versions)
	}
	ai := p.inventory(e, inv)
	out := map[string]string{}
	for node, d := range want {
		switch {
		case note == "":
			out[node] = "first run"
		case have[node] == d:
		case have != nil && have[node] == "":
			out[node] = "new node"
		default:
			out[node] = "configuration or roles changed"
			if old, ok := haveBins[node]; ok {
				if names := changedBinaries(old, binaries(ai.Hosts[node], p.Roles)); len(names) > 0 {
					out[node] = stages.ReasonNewBinaries + strings.Join(names, ", ")
				}
			}
		}
	}
	return out, nil
}

// binariesNote is the stage's note of the binaries its nodes got (node →
// binaries), to tell an upgrade apart from other changes in plans.
func binariesNote(tag string) string { return "ansible_" + tag + "_binaries" }

// changedBinaries names the programs whose identity differs between two
// results of binaries.
func changedBinaries(old, now []string) []string {
	var out []string
	for _, b := range now {
		if !slices.Contains(old, b) {
			name, _, _ := strings.Cut(b, "=")
			out = append(out, name)
		}
	}
	return out
}

// digests returns each node's digest of what the play reads for it: the
// roles, the shared variables, its own host variables and groups, the
// addresses of the servers and Vault nodes the templates list, and the
// secrets. Other nodes' host variables are left out, so adding a client
// leaves the others' digests as they were.
func digests(e *stages.Env, inv *inventory.Inventory, p Play) (map[string]string, error) {
	ai := p.inventory(e, inv)
	peers := map[string][]string{}
	for _, g := range []string{"servers", "vault"} {
		for _, n := range ai.Groups[g] {
			peers[g] = append(peers[g], n+"="+fmt.Sprint(ai.Hosts[n]["node_ip"]))
		}
	}
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(p.Secrets)) {
		fmt.Fprintf(h, "%s=%s\n", k, p.Secrets[k])
	}
	shared := hex.EncodeToString(h.Sum(nil))
	out := map[string]string{}
	for _, node := range playHosts(inv, p) {
		var groups []string
		for _, g := range slices.Sorted(maps.Keys(ai.Groups)) {
			if slices.Contains(ai.Groups[g], node) {
				groups = append(groups, g)
			}
		}
		h := sha256.New()
		for _, k := range slices.Sorted(maps.Keys(p.NodeSecrets)) {
			fmt.Fprintf(h, "%s=%s\n", k, p.NodeSecrets[k][node])
		}
		d, err := Digest(p.Roles, map[string]any{
			"vars":         ai.Vars,
			"host":         ai.Hosts[node],
			"groups":       groups,
			"peers":        peers,
			"secrets":      shared,
			"node_secrets": hex.EncodeToString(h.Sum(nil)),
			"binaries":     binaries(ai.Hosts[node], p.Roles),
		})
		if err != nil {
			return nil, err
		}
		out[node] = d
	}
	return out, nil
}

// playHosts are the nodes p configures.
func playHosts(inv *inventory.Inventory, p Play) []string {
	if len(p.Hosts) > 0 {
		return p.Hosts
	}
	return inventory.Names(inv.Nodes)
}

// Converge runs the play on hosts (every node of the play when empty) and
// records their digests.
func Converge(ctx context.Context, e *stages.Env, inv *inventory.Inventory, p Play, hosts []string) error {
	want, err := digests(e, inv, p)
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		hosts = playHosts(inv, p)
	}
	ai := p.inventory(e, inv)
	if err := checkBinaries(ai, hosts, p.Roles); err != nil {
		return err
	}
	if err := addArchives(ai, hosts, p.Roles); err != nil {
		return err
	}
	bins := map[string][]string{}
	for _, node := range hosts {
		bins[node] = binaries(ai.Hosts[node], p.Roles)
	}
	r, err := prepare(e, inv, p.Tag, ai, p.Leader)
	if err != nil {
		return err
	}
	if len(p.Secrets) > 0 || len(p.NodeSecrets) > 0 || p.LeaderToken != "" {
		vars := map[string]any{}
		if p.LeaderToken != "" {
			vars["leader_token"] = p.LeaderToken
		}
		for k, v := range p.Secrets {
			vars[k] = v
		}
		for k, v := range p.NodeSecrets {
			vars[k] = v
		}
		name := "ansible/" + p.Tag + "-vars.json"
		sb, err := json.Marshal(vars)
		if err != nil {
			return err
		}
		if err := e.Secrets.Put(name, string(sb)); err != nil {
			return err
		}
		r.VarsFiles = append(r.VarsFiles, e.Secrets.Path(name))
	}
	if err := r.Run(ctx, "site.yml", []string{p.Tag}, hosts); err != nil {
		return withLogHint(err, inv)
	}
	return record(e, p.Tag, want, bins)
}

// start starts the play's agents on hosts whose inputs are unchanged since
// the play last converged them but whose agents do not answer: site.yml's
// <tag>_start play, a few tasks rather than every task of the roles. Where
// it fails (a file the roles write is missing, say) the whole play runs, on
// the hosts it failed on when Ansible names them (the others went on and
// started).
func start(ctx context.Context, e *stages.Env, inv *inventory.Inventory, p Play, hosts []string) error {
	r, err := prepare(e, inv, p.Tag, p.inventory(e, inv), p.Leader)
	if err != nil {
		return err
	}
	err = r.Run(ctx, "site.yml", []string{p.Tag + "_start"}, hosts)
	if err == nil || ctx.Err() != nil {
		return err
	}
	var ae *Error
	if errors.As(err, &ae) && len(ae.Failures) > 0 {
		hosts = nil
		for _, f := range ae.Failures {
			if !slices.Contains(hosts, f.Host) {
				hosts = append(hosts, f.Host)
			}
		}
	}
	e.Step("starting %s failed on %s (%v): running the whole play there", p.Tag, strings.Join(hosts, ", "), err)
	return Converge(ctx, e, inv, p, hosts)
}

// Run is what cluster.Service.Converge runs for p: start where only agents
// need starting, else Converge.
func Run(ctx context.Context, e *stages.Env, inv *inventory.Inventory, p Play) func(hosts []string, startOnly bool) error {
	return func(hosts []string, startOnly bool) error {
		if startOnly {
			return start(ctx, e, inv, p, hosts)
		}
		return Converge(ctx, e, inv, p, hosts)
	}
}

// record notes that the play of tag converged the nodes of bins, with
// their digests (want holds every node of the play) and binaries.
func record(e *stages.Env, tag string, want map[string]string, bins map[string][]string) error {
	var have map[string]string
	if json.Unmarshal([]byte(e.Note(digestNote(tag))), &have) != nil || have == nil {
		have = map[string]string{}
	}
	var haveBins map[string][]string
	if json.Unmarshal([]byte(e.Note(binariesNote(tag))), &haveBins) != nil || haveBins == nil {
		haveBins = map[string][]string{}
	}
	for node := range have {
		if _, ok := want[node]; !ok {
			delete(have, node) // no longer in the play
			delete(haveBins, node)
		}
	}
	for node, b := range bins {
		have[node] = want[node]
		haveBins[node] = b
	}
	b, err := json.Marshal(have)
	if err != nil {
		return err
	}
	bb, err := json.Marshal(haveBins)
	if err != nil {
		return err
	}
	// The binaries first: a kill between the two notes leaves the old
	// digests, and the play runs again (only its reason no longer names
	// the binaries).
	if err := e.SetNote(binariesNote(tag), string(bb)); err != nil {
		return err
	}
	return e.SetNote(digestNote(tag), string(b))
}

// withLogHint adds where the failed local nodes' service logs are: a
// failed task on an agent is most often explained there (a machine's are in
// its journal, which the task output names by unit).
func withLogHint(err error, inv *inventory.Inventory) error {
	var ae *Error
	if !errors.As(err, &ae) {
		return err
	}
	var dirs []string
	for _, f := range ae.Failures {
		if n, ok := inv.Node(f.Host); ok && n.Local != nil {
			if d := filepath.Join(n.Local.Root, "logs"); !slices.Contains(dirs, d) {
				dirs = append(dirs, d)
			}
		}
	}
	if len(dirs) == 0 {
		return err
	}
	return fmt.Errorf("%w; see the logs in %s", err, strings.Join(dirs, ", "))
}

// roleBinaries are the programs a role installs from bin_dir.
var roleBinaries = map[string]string{
	"vault":           "vault",
	"consul":          "consul",
	"nomad":           "nomad",
	"consul_template": "consul-template",
	"node_exporter":   "prometheus-node-exporter",
}

// binaries identifies the programs a host installs from bin_dir (the file
// each name resolves to, its size and time): a new one, such as `make
// tools` links after a version bump, is an upgrade the roles roll out
// (they restart an agent that runs another binary than its own). apt
// installs are covered by the versions among the variables.
func binaries(host map[string]any, roles []string) []string {
	dir, _ := host["bin_dir"].(string)
	if host["install_method"] != "binary" || dir == "" {
		return nil
	}
	var out []string
	for _, role := range roles {
		bin, ok := roleBinaries[role]
		if !ok {
			continue
		}
		if id, err := fileIdentity(filepath.Join(dir, bin)); err == nil {
			out = append(out, bin+"="+id)
		} // else checkBinaries names it before a play runs
	}
	return out
}

// fileIdentity is the file path resolves to, with its size and time: what
// tells one build of a binary from the next without reading it.
func fileIdentity(path string) (string, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %d %d", real, fi.Size(), fi.ModTime().UnixNano()), nil
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
	r, err := prepare(e, inv, "teardown", BuildInventory(e, inv, nil), "")
	if err != nil {
		return err
	}
	return r.Run(ctx, "teardown.yml", nil, nil)
}

// prepare writes the playbooks and the inventory-<name>.json of a run to the
// state directory and returns a runner that reports progress as steps.
func prepare(e *stages.Env, inv *inventory.Inventory, name string, ai Inventory, leader string) (*Runner, error) {
	dir := e.Path("ansible")
	if err := Extract(dir); err != nil {
		return nil, err
	}
	invFile := filepath.Join(dir, "inventory-"+name+".json")
	// Always present, so that site.yml's patterns name a known group.
	ai.Groups["leader"] = nil
	if leader != "" {
		ai.Groups["leader"] = []string{leader}
	}
	b, err := json.MarshalIndent(ai, "", "  ")
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
	ai.Vars["bootstrap_tls_dir"] = e.Path("tls")
	ai.Vars["bootstrap_secret_dir"] = e.Secrets.Dir()
	for k, val := range extra {
		ai.Vars[k] = val
	}
	return ai
}

// inventory is BuildInventory with p's variables.
func (p Play) inventory(e *stages.Env, inv *inventory.Inventory) Inventory {
	ai := BuildInventory(e, inv, p.Vars)
	for _, n := range ai.Groups["servers"] {
		maps.Copy(ai.Hosts[n], p.ServerVars)
	}
	return ai
}

// ConsulVars are the platform.hcl settings only the consul play uses, for
// its variables alone (in every play's, changing one would run the vault
// and nomad roles on every node too): vars for every node and serverVars
// for the servers alone (the clients do not serve the UI).
func ConsulVars(cfg *config.Platform) (vars, serverVars map[string]any) {
	return map[string]any{"consul_dns": cfg.Consul.DNS}, map[string]any{"consul_ui": cfg.Consul.UI}
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
	if n.DataDevice != "" {
		v["data_device"] = n.DataDevice
		v["data_mount"] = inventory.DataMount
	}
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
