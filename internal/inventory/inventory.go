// Package inventory is the contract every provider yields: the machines of a
// platform, their roles and how to reach them.
//
//	{"version": 1,
//	 "nodes": [{"name": "server-1", "roles": ["server", "vault"],
//	            "public_ip": "…", "private_ip": "…",
//	            "ssh": {"user": "root", "port": 22, "private_key_file": "…"}}]}
//
// Unknown fields are ignored so providers can add their own. The field
// "local" is not part of the contract: only the local provider sets it, in
// process, and an inventory that comes from outside (a file, Terraform's
// output) is refused if it has one.
package inventory

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
)

// Version is the contract version this bootstrap reads and writes.
const Version = 1

// Roles.
const (
	RoleServer = "server"
	RoleClient = "client"
	RoleVault  = "vault"
)

// Inventory is the list of nodes.
type Inventory struct {
	Version int    `json:"version"`
	Nodes   []Node `json:"nodes"`
}

// Node is one machine.
type Node struct {
	Name      string   `json:"name"`
	Roles     []string `json:"roles"`
	PublicIP  string   `json:"public_ip,omitempty"`
	PrivateIP string   `json:"private_ip"`
	SSH       SSH      `json:"ssh"`
	// DataDevice is a block device of a client that holds the platform's
	// data (Prometheus's TSDB), e.g. a cloud volume
	// (/dev/disk/by-id/scsi-0DO_Volume_<name>). The nomad role formats it
	// (ext4) only when it holds no filesystem, and mounts it at DataMount.
	DataDevice string `json:"data_device,omitempty"`
	// Local describes a node of the local provider: processes on this
	// machine, with their own directory tree and a loopback address.
	Local *Local `json:"local,omitempty"`
}

// SSH says how to reach a node. Local nodes have none.
type SSH struct {
	User           string `json:"user,omitempty"`
	Port           int    `json:"port,omitempty"`
	PrivateKeyFile string `json:"private_key_file,omitempty"`
}

// Local is the per-node layout of the local provider.
type Local struct {
	// Root holds the node's config, data, tls, logs and run directories.
	Root string `json:"root"`
	// BinDir holds the vault, consul, nomad, ... binaries the node runs.
	BinDir string `json:"bin_dir"`
	// MinDynamicPort and MaxDynamicPort split Nomad's dynamic port range
	// between the client nodes, which all share loopback.
	MinDynamicPort int `json:"min_dynamic_port,omitempty"`
	MaxDynamicPort int `json:"max_dynamic_port,omitempty"`
}

// DataMount is where a node's DataDevice is mounted.
const DataMount = "/var/lib/bootstrap-data"

// Has reports whether the node has a role.
func (n Node) Has(role string) bool { return slices.Contains(n.Roles, role) }

// Address is the address other nodes reach this one on.
func (n Node) Address() string { return n.PrivateIP }

// APIAddress is the address bootstrap itself reaches the node's APIs on:
// the public address when the node has one (bootstrap runs outside the
// machines' private network), else the private one.
func (n Node) APIAddress() string {
	if n.PublicIP != "" {
		return n.PublicIP
	}
	return n.PrivateIP
}

// WithRole returns the nodes that have a role, in inventory order.
func (inv *Inventory) WithRole(role string) []Node {
	var out []Node
	for _, n := range inv.Nodes {
		if n.Has(role) {
			out = append(out, n)
		}
	}
	return out
}

// ClientsOnly returns the clients that are not servers too, in inventory
// order: a node with both roles carries the server's certificate and is
// watched as a server.
func (inv *Inventory) ClientsOnly() []Node {
	var out []Node
	for _, n := range inv.Nodes {
		if n.Has(RoleClient) && !n.Has(RoleServer) {
			out = append(out, n)
		}
	}
	return out
}

// Node returns the named node.
func (inv *Inventory) Node(name string) (Node, bool) {
	for _, n := range inv.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// Names returns the names of nodes.
func Names(nodes []Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Name
	}
	return out
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// Validate checks the contract: unique valid names, known roles, addresses,
// an odd number of servers, at least one client. source names where the
// inventory came from, for the error message.
func (inv *Inventory) Validate(source string) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{source}, args...)...))
	}
	if inv.Version != Version {
		bad("inventory version %d is not supported (this bootstrap reads version %d)", inv.Version, Version)
	}
	if len(inv.Nodes) == 0 {
		bad("no nodes")
	}
	seen := map[string]bool{}
	servers, clients := 0, 0
	for i, n := range inv.Nodes {
		where := fmt.Sprintf("nodes[%d]", i)
		if n.Name != "" {
			where = fmt.Sprintf("node %q", n.Name)
		}
		if !nameRE.MatchString(n.Name) {
			bad("%s: name %q must be lowercase letters, digits and dashes", where, n.Name)
		}
		if seen[n.Name] {
			bad("%s: defined twice", where)
		}
		seen[n.Name] = true
		if len(n.Roles) == 0 {
			bad("%s: no roles; give it server, client and/or vault", where)
		}
		for _, r := range n.Roles {
			if r != RoleServer && r != RoleClient && r != RoleVault {
				bad("%s: unknown role %q (roles are server, client, vault)", where, r)
			}
		}
		if n.Has(RoleServer) {
			servers++
		}
		if n.Has(RoleClient) {
			clients++
		}
		if net.ParseIP(n.PrivateIP) == nil {
			bad("%s: private_ip %q is not an IP address", where, n.PrivateIP)
		}
		if n.PublicIP != "" && net.ParseIP(n.PublicIP) == nil {
			bad("%s: public_ip %q is not an IP address", where, n.PublicIP)
		}
		if n.DataDevice != "" {
			switch {
			case n.Local != nil:
				bad("%s: data_device: the local provider's nodes keep their data in the state directory", where)
			case !strings.HasPrefix(n.DataDevice, "/dev/"):
				bad("%s: data_device %q is not a device under /dev/ (e.g. /dev/disk/by-id/scsi-0DO_Volume_data-1)", where, n.DataDevice)
			case !n.Has(RoleClient):
				bad("%s: data_device: only a client runs Prometheus; attach the volume to a client", where)
			}
		}
		if n.Local == nil && (n.SSH.Port < 0 || n.SSH.Port > 65535) {
			bad("%s: ssh.port %d is not a port", where, n.SSH.Port)
		}
	}
	if len(inv.Nodes) > 0 {
		if servers == 0 || servers%2 == 0 {
			bad("%d server node(s); use an odd number (1, 3, 5) so Consul and Nomad keep a quorum", servers)
		}
		if clients == 0 {
			bad("no client node; the platform jobs need at least one")
		}
	}
	return errors.Join(errs...)
}

// LocalFieldError is returned when an inventory from outside bootstrap has
// a node with a "local" field. That field makes bootstrap treat the node as
// processes on this machine: `down` would stop every process under, and
// remove, a directory the inventory chose.
type LocalFieldError struct {
	Source string // the file or output the inventory came from
	Node   string // the node's name, or nodes[i]
}

func (e *LocalFieldError) Error() string {
	return fmt.Sprintf("%s: %s: field \"local\" is not allowed in an inventory file or Terraform output; only the local provider describes local nodes (remove the field, or use provider \"local\")", e.Source, e.Node)
}

// externalNode decodes a node of an untrusted inventory. Its Local field
// hides Node.Local (encoding/json fills the shallower field, whatever the
// key's case), so a "local" key can only land here, where it is refused.
type externalNode struct {
	Node
	Local json.RawMessage `json:"local"`
}

// Parse reads the contract from JSON that comes from outside bootstrap (an
// inventory file, Terraform's output), ignoring unknown fields and refusing
// "local" with a *LocalFieldError, and fills in SSH defaults (root, port 22).
func Parse(b []byte, source string) (*Inventory, error) {
	var ext struct {
		Version int            `json:"version"`
		Nodes   []externalNode `json:"nodes"`
	}
	if err := json.Unmarshal(b, &ext); err != nil {
		return nil, notInventory(source, err)
	}
	inv := Inventory{Version: ext.Version}
	for i, n := range ext.Nodes {
		if n.Local != nil {
			where := fmt.Sprintf("nodes[%d]", i)
			if name := strings.TrimSpace(n.Name); name != "" {
				where = fmt.Sprintf("node %q", name)
			}
			return nil, &LocalFieldError{Source: source, Node: where}
		}
		inv.Nodes = append(inv.Nodes, n.Node)
	}
	return finish(&inv, source)
}

// ParseSaved reads an inventory that Save wrote into the state directory.
// Only bootstrap writes there, so "local" is kept: it is how the local
// provider's nodes are recorded.
func ParseSaved(b []byte, source string) (*Inventory, error) {
	var inv Inventory
	if err := json.Unmarshal(b, &inv); err != nil {
		return nil, notInventory(source, err)
	}
	return finish(&inv, source)
}

func notInventory(source string, err error) error {
	return fmt.Errorf("%s: not an inventory (%v); see the inventory contract in README.md", source, err)
}

// finish fills in the SSH defaults and validates.
func finish(inv *Inventory, source string) (*Inventory, error) {
	for i := range inv.Nodes {
		n := &inv.Nodes[i]
		if n.Local == nil {
			if n.SSH.User == "" {
				n.SSH.User = "root"
			}
			if n.SSH.Port == 0 {
				n.SSH.Port = 22
			}
		}
		n.Name = strings.TrimSpace(n.Name)
	}
	if err := inv.Validate(source); err != nil {
		return nil, err
	}
	return inv, nil
}

// Load reads an inventory file from outside bootstrap (see Parse).
func Load(path string) (*Inventory, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	return Parse(b, path)
}

// LoadSaved reads an inventory file that Save wrote (see ParseSaved).
func LoadSaved(path string) (*Inventory, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read inventory: %w", err)
	}
	return ParseSaved(b, path)
}

// Save writes the inventory atomically, for LoadSaved; the file must be in
// the state directory, which only bootstrap writes.
func (inv *Inventory) Save(path string) error {
	b, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFile(path, append(b, '\n'), 0o600)
}

// Equal reports whether two inventories describe the same nodes.
func Equal(a, b *Inventory) bool {
	if a == nil || b == nil {
		return a == b
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}
