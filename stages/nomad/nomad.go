// Package nomad is the stage that runs Nomad: servers then clients with TLS
// on HTTP and RPC from the Vault PKI (renewed by consul-template), gossip
// encryption, the Consul and Vault integrations; then a crash-safe ACL
// bootstrap, the namespaces, least-privilege tokens and Vault's trust in
// Nomad's workload identities.
package nomad

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/ansible"
	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/consul"
	"github.com/platform-bootstrap/bootstrap/stages/provision"
)

// HTTPPort is Nomad's API port (HTTPS) on every node.
const HTTPPort = 4646

// Stage is the nomad stage.
type Stage struct{}

// New returns the nomad stage.
func New() *Stage { return &Stage{} }

// Name is "nomad".
func (*Stage) Name() string { return "nomad" }

// Addr is the HTTPS URL of a node's Nomad agent.
func Addr(n inventory.Node) string {
	return "https://" + net.JoinHostPort(n.APIAddress(), fmt.Sprint(HTTPPort))
}

// CAFile is the chain that verifies every Nomad agent's certificate.
func CAFile(e *stages.Env) string { return pki.CAFile(e.StateDir, "nomad") }

// OutTLSServerName records the name the servers' certificates carry
// (server.<region>.nomad), for `bootstrap env` (NOMAD_TLS_SERVER_NAME).
const OutTLSServerName = "nomad_tls_server_name"

// ServerName is the name in the certificates of the Nomad servers of e's
// region. Clients verify it rather than the address they dial: the PKI
// issues any IP address to client nodes too, never this name.
func ServerName(e *stages.Env) string { return apitls.NomadServerName(e.Config.Region) }

// TLSName is the name n's agent must present: a server's name for server
// nodes, the client agents' name (client.<region>.nomad) otherwise.
func TLSName(e *stages.Env, n inventory.Node) string {
	if n.Has(inventory.RoleServer) {
		return ServerName(e)
	}
	return apitls.NomadClientName(e.Config.Region)
}

// NewClient returns a Nomad API client for a server's address that trusts
// caFile and carries exactly token (NOMAD_* variables of the environment
// are ignored). The certificate must name a Nomad server of any region, so
// a client node's certificate is refused even when it carries the dialled
// address; NewClientFor checks the exact name.
func NewClient(addr, caFile, token string) (*nomadapi.Client, error) {
	tc, err := apitls.Config(caFile, "")
	if err != nil {
		return nil, fmt.Errorf("nomad client for %s: %w", addr, err)
	}
	apitls.RequireServer(tc)
	return newClient(addr, tc, token)
}

// NewClientFor returns a Nomad API client for addr that accepts only a
// certificate valid for serverName (see ServerName and TLSName).
func NewClientFor(addr, caFile, serverName, token string) (*nomadapi.Client, error) {
	if serverName == "" {
		return nil, fmt.Errorf("nomad client for %s: no TLS server name", addr)
	}
	tc, err := apitls.Config(caFile, serverName)
	if err != nil {
		return nil, fmt.Errorf("nomad client for %s: %w", addr, err)
	}
	return newClient(addr, tc, token)
}

func newClient(addr string, tc *tls.Config, token string) (*nomadapi.Client, error) {
	// The HTTP client is built here because the api package's TLSConfig
	// cannot require a server's name; with HttpClient set it is ignored.
	// A transport with its own TLS configuration speaks HTTP/1, as the api
	// package's own client does: its exec websockets need it.
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}
	c, err := nomadapi.NewClient(&nomadapi.Config{
		Address:    addr,
		SecretID:   token,
		HttpClient: &http.Client{Transport: tr},
		WaitTime:   5 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("nomad client: %w", err)
	}
	c.SetSecretID(token)
	c.SetNamespace("")
	c.SetRegion("")
	return c, nil
}

// Client returns an API client for one node, verifying the name of its
// role (TLSName).
func Client(e *stages.Env, n inventory.Node, token string) (*nomadapi.Client, error) {
	return NewClientFor(Addr(n), CAFile(e), TLSName(e, n), token)
}

// ServerClient returns an API client for the server address the stage
// recorded (OutNomadAddr), verifying ServerName.
func ServerClient(e *stages.Env, token string) (*nomadapi.Client, error) {
	addr := e.State.Output(stages.OutNomadAddr)
	if addr == "" {
		return nil, stages.NotReadyf("nomad is not up yet")
	}
	return NewClientFor(addr, CAFile(e), ServerName(e), token)
}

type deps struct {
	inv   *inventory.Inventory
	vault *vaultapi.Client
	play  ansible.Play
}

func load(e *stages.Env) (*deps, error) {
	inv, err := provision.Load(e)
	if err != nil {
		return nil, err
	}
	addr := e.State.Output(stages.OutVaultAddr)
	if addr == "" {
		return nil, stages.NotReadyf("vault is not up yet")
	}
	if e.State.Output(stages.OutConsulAddr) == "" {
		return nil, stages.NotReadyf("consul is not up yet")
	}
	if _, err := os.Stat(CAFile(e)); err != nil {
		return nil, stages.NotReadyf("the nomad CA (%s) does not exist yet: the pki stage has not run", CAFile(e))
	}
	secrets := map[string]string{}
	for key, name := range map[string]string{
		"nomad_gossip_key":   stages.SecretNomadGossipKey,
		"nomad_consul_token": consul.SecretNomadAgentToken,
	} {
		v, ok, err := e.Secrets.Get(name)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, stages.NotReadyf("%s does not exist yet (keys, pki and consul stages)", name)
		}
		secrets[key] = strings.TrimSpace(v)
	}
	// Each node's consul-template renews the nomad certificate with the
	// node's own token, as it does the consul one.
	tokens, err := consul.TemplateTokens(e, inv)
	if err != nil {
		return nil, err
	}
	secrets[consul.TemplateTokensVar] = tokens
	vc, err := pki.NewClient(addr, e.State.Output(stages.OutVaultCACert))
	if err != nil {
		return nil, err
	}
	return &deps{
		inv:   inv,
		vault: vc,
		play: ansible.Play{
			Tag:     "nomad",
			Roles:   []string{"common", "consul_template", "cni", "nomad"},
			Vars:    map[string]any{"vault_addr": addr, "nomad_cert_ttl": e.Config.PKI.LeafTTL},
			Secrets: secrets,
		},
	}, nil
}

type agentState struct {
	node   inventory.Node
	leader string
	err    error
}

func (a agentState) up() bool { return a.err == nil }

func probe(e *stages.Env, inv *inventory.Inventory) []agentState {
	out := make([]agentState, len(inv.Nodes))
	for i, n := range inv.Nodes {
		out[i].node = n
		c, err := Client(e, n, "")
		if err != nil {
			out[i].err = err
			continue
		}
		// status/leader needs no token.
		out[i].leader, out[i].err = c.Status().Leader()
	}
	return out
}

func leaderOf(as []agentState) string {
	for _, a := range as {
		if a.up() && a.leader != "" {
			return a.leader
		}
	}
	return ""
}

// Plan compares the Ansible inputs and asks every agent and the cluster.
func (s *Stage) Plan(ctx context.Context, e *stages.Env) ([]stages.Change, error) {
	d, err := load(e)
	if err != nil {
		return nil, err
	}
	var out []stages.Change
	reason, err := ansible.Pending(e, d.inv, d.play)
	if err != nil {
		return nil, err
	}
	if reason != "" {
		out = append(out, stages.Change{Action: "install", Target: "nomad on every node", Detail: reason})
	}
	if e.State.Output(OutTLSServerName) != ServerName(e) {
		out = append(out, stages.Change{Action: "record", Target: "output " + OutTLSServerName, Detail: ServerName(e)})
	}
	as := probe(e, d.inv)
	for _, a := range as {
		if !a.up() {
			out = append(out, stages.Change{Action: "start", Target: "nomad on " + a.node.Name, Detail: "not answering"})
		}
	}
	if leaderOf(as) == "" {
		return append(out, stages.Change{Action: "bootstrap", Target: "nomad ACLs, namespaces, policies and tokens"}), nil
	}
	acl, err := planACL(ctx, e, d, as)
	if err != nil {
		return nil, err
	}
	return append(out, acl...), nil
}

// Apply converges the agents, the ACL system and Vault's JWT trust.
func (s *Stage) Apply(ctx context.Context, e *stages.Env) error {
	d, err := load(e)
	if err != nil {
		return err
	}
	reason, err := ansible.Pending(e, d.inv, d.play)
	if err != nil {
		return err
	}
	as := probe(e, d.inv)
	down := slices.ContainsFunc(as, func(a agentState) bool { return !a.up() })
	if reason != "" || down {
		e.Step("installing nomad on %d node(s)", len(d.inv.Nodes))
		if err := ansible.Converge(ctx, e, d.inv, d.play); err != nil {
			return err
		}
	}
	servers := d.inv.WithRole(inventory.RoleServer)
	if err := e.State.SetOutput(stages.OutNomadAddr, Addr(servers[0])); err != nil {
		return err
	}
	if err := e.State.SetOutput(stages.OutNomadCACert, CAFile(e)); err != nil {
		return err
	}
	if err := e.State.SetOutput(OutTLSServerName, ServerName(e)); err != nil {
		return err
	}
	if err := waitLeader(ctx, e, d.inv); err != nil {
		return err
	}
	mgmt, err := bootstrapACL(ctx, e, servers[0])
	if err != nil {
		return err
	}
	if err := waitCaughtUp(ctx, e, d.inv, mgmt); err != nil {
		return err
	}
	if err := applyACL(ctx, e, d, mgmt); err != nil {
		return err
	}
	return waitClients(ctx, e, d.inv, mgmt)
}

func waitLeader(ctx context.Context, e *stages.Env, inv *inventory.Inventory) error {
	e.Step("waiting for the nomad leader")
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		as := probe(e, inv)
		var down []string
		for _, a := range as {
			if !a.up() {
				down = append(down, a.node.Name)
			}
		}
		if len(down) == 0 && leaderOf(as) != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			if len(down) > 0 {
				return fmt.Errorf("nomad does not answer on %s; see %s", strings.Join(down, ", "), logHint(inv, down[0]))
			}
			return fmt.Errorf("nomad servers elected no leader; see %s", logHint(inv, inv.WithRole(inventory.RoleServer)[0].Name))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitCaughtUp waits until every server has applied what the cluster had
// committed. A server that was just restarted answers, and votes, before it
// has replayed the log written since its last snapshot: until then it
// refuses newer ACL tokens with 403 on the endpoints it serves itself (job
// parsing, agent calls), which the jobs stage and users hit.
func waitCaughtUp(ctx context.Context, e *stages.Env, inv *inventory.Inventory, mgmt string) error {
	servers := inv.WithRole(inventory.RoleServer)
	var target uint64
	lag := map[string]string{}
	err := poll.Retry(ctx, 2*time.Minute, 500*time.Millisecond, func() error {
		clear(lag)
		applied := map[string]uint64{}
		for _, n := range servers {
			c, err := Client(e, n, mgmt)
			if err != nil {
				return err
			}
			self, err := c.Agent().Self()
			if err != nil {
				lag[n.Name] = err.Error()
				continue
			}
			ai, _ := strconv.ParseUint(self.Stats["raft"]["applied_index"], 10, 64)
			ci, _ := strconv.ParseUint(self.Stats["raft"]["commit_index"], 10, 64)
			applied[n.Name] = ai
			target = max(target, ci)
		}
		for name, ai := range applied {
			if ai < target {
				lag[name] = fmt.Sprintf("applied index %d of %d", ai, target)
			}
		}
		if len(lag) > 0 {
			return errors.New("behind")
		}
		return nil
	}, func(error) bool { return false })
	if err != nil {
		var names []string
		for name, why := range lag {
			names = append(names, name+" ("+why+")")
		}
		slices.Sort(names)
		return fmt.Errorf("nomad servers have not caught up with the cluster: %s; see %s", strings.Join(names, ", "), logHint(inv, servers[0].Name))
	}
	return nil
}

// waitClients waits until every client node is ready with a healthy task
// driver.
func waitClients(ctx context.Context, e *stages.Env, inv *inventory.Inventory, mgmt string) error {
	clients := inv.WithRole(inventory.RoleClient)
	c, err := Client(e, inv.WithRole(inventory.RoleServer)[0], mgmt)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var notReady []string
	for {
		notReady = notReady[:0]
		nodes, _, err := c.Nodes().List((&nomadapi.QueryOptions{}).WithContext(ctx))
		ready := map[string]bool{}
		if err == nil {
			for _, n := range nodes {
				ready[n.Name] = n.Status == "ready" && n.SchedulingEligibility == "eligible" && anyDriverHealthy(n)
			}
		}
		for _, n := range clients {
			if !ready[n.Name] {
				notReady = append(notReady, n.Name)
			}
		}
		if len(notReady) == 0 {
			warnNoIsolation(e, nodes)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nomad clients not ready: %s; see %s", strings.Join(notReady, ", "), logHint(inv, notReady[0]))
		case <-time.After(time.Second):
		}
	}
}

// warnNoIsolation says plainly when no client can run an application job:
// application namespaces may only use isolating drivers, and a hole stays
// closed even when that is inconvenient.
func warnNoIsolation(e *stages.Env, nodes []*nomadapi.NodeListStub) {
	for _, n := range nodes {
		for _, name := range AppDrivers {
			if d := n.Drivers[name]; d != nil && d.Detected && d.Healthy {
				return
			}
		}
	}
	e.Warnf("no Nomad client has a healthy %s driver: application jobs (dev, prod) cannot run anywhere. The exec driver needs root and cgroups; or install a Docker engine on the clients (Debian: apt-get install docker.io)", strings.Join(AppDrivers, " or "))
}

func anyDriverHealthy(n *nomadapi.NodeListStub) bool {
	for name, d := range n.Drivers {
		if (name == "raw_exec" || name == "docker" || name == "exec") && d.Detected && d.Healthy {
			return true
		}
	}
	return false
}

func logHint(inv *inventory.Inventory, node string) string {
	n, _ := inv.Node(node)
	if n.Local != nil {
		return n.Local.Root + "/logs/nomad.log"
	}
	return "journalctl -u nomad on " + node
}

// Status reports each agent, the leader and client readiness.
func (s *Stage) Status(ctx context.Context, e *stages.Env) ([]stages.StatusLine, error) {
	inv, err := provision.Load(e)
	if err != nil {
		return nil, nil
	}
	if _, err := os.Stat(CAFile(e)); err != nil {
		return nil, nil
	}
	tok, _, _ := e.Secrets.Get(stages.SecretNomadBootstrapToken)
	as := probe(e, inv)
	leader := leaderOf(as)
	nodeStatus := map[string]string{}
	if leader != "" && tok != "" {
		if c, err := Client(e, inv.WithRole(inventory.RoleServer)[0], tok); err == nil {
			if nodes, _, err := c.Nodes().List((&nomadapi.QueryOptions{}).WithContext(ctx)); err == nil {
				for _, n := range nodes {
					nodeStatus[n.Name] = n.Status
				}
			}
		}
	}
	var out []stages.StatusLine
	for _, a := range as {
		l := stages.StatusLine{Component: "nomad", Node: a.node.Name}
		role := "client"
		if a.node.Has(inventory.RoleServer) {
			role = "server"
		}
		switch {
		case !a.up():
			l.State = "down"
		case leader != "" && strings.HasPrefix(leader, a.node.Address()+":"):
			l.State, l.Healthy = role+", leader", true
		default:
			l.State, l.Healthy = role, leader != ""
		}
		if st, ok := nodeStatus[a.node.Name]; ok && role == "client" {
			l.Detail = "node " + st
			l.Healthy = l.Healthy && st == "ready"
		}
		out = append(out, l)
	}
	if leader != "" {
		if l, ok := keysStatus(ctx, e, inv); ok {
			out = append(out, l)
		}
	}
	return out, nil
}

// ErrLockedOut means the cluster's ACLs were bootstrapped with a token
// bootstrap does not have.
var ErrLockedOut = errors.New("nomad ACLs were bootstrapped outside bootstrap")
