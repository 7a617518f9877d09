// Package nomad is the stage that runs Nomad: servers then clients with TLS
// on HTTP and RPC from the Vault PKI (renewed by consul-template), gossip
// encryption, the Consul and Vault integrations; then a crash-safe ACL
// bootstrap, the namespaces, least-privilege tokens and Vault's trust in
// Nomad's workload identities.
package nomad

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/imagearchive"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Stage is the nomad stage.
type Stage struct{}

// New returns the nomad stage.
func New() *Stage { return &Stage{} }

// Name is "nomad".
func (*Stage) Name() string { return "nomad" }

// NewClient returns a Nomad API client for a server's address that trusts
// caFile and carries exactly token (NOMAD_* variables of the environment
// are ignored). The certificate must name a Nomad server of any region, so
// a client node's certificate is refused even when it carries the dialled
// address; NewClientFor checks the exact name.
func NewClient(addr, caFile, token string) (*nomadapi.Client, error) {
	return cluster.NomadClient(addr, caFile, "", token)
}

// NewClientFor returns a Nomad API client for addr that accepts only a
// certificate valid for serverName (see Env.NomadTLSName).
func NewClientFor(addr, caFile, serverName, token string) (*nomadapi.Client, error) {
	if serverName == "" {
		return nil, fmt.Errorf("nomad client for %s: no TLS server name", addr)
	}
	return cluster.NomadClient(addr, caFile, serverName, token)
}

type deps struct {
	inv   *inventory.Inventory
	vault *vaultapi.Client
	play  ansible.Play
}

func load(e *stages.Env) (*deps, error) {
	inv, err := e.Inventory()
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
	caHash, err := cluster.CAHash(e.CAFile("nomad"))
	if err != nil {
		return nil, stages.NotReadyf("the nomad CA (%s) does not exist yet: the pki stage has not run", e.CAFile("nomad"))
	}
	secrets := map[string]string{}
	for key, name := range map[string]string{
		"nomad_gossip_key":   stages.SecretNomadGossipKey,
		"nomad_consul_token": stages.SecretConsulNomadAgentToken,
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
	tokens, err := pki.TemplateTokens(e, inv)
	if err != nil {
		return nil, err
	}
	vars := map[string]any{"vault_addr": addr, "nomad_cert_ttl": e.Config.PKI.LeafTTL, "ct_ca_hash": caHash,
		"node_exporter_enabled": e.Config.Jobs.NodeExporter.Enabled, "node_exporter_port": stages.NodeExporterPort}
	if err := dockerVars(e.Config, vars); err != nil {
		return nil, err
	}
	vc, err := pki.NewClient(addr, e.State.Output(stages.OutVaultCACert))
	if err != nil {
		return nil, err
	}
	return &deps{
		inv:   inv,
		vault: vc,
		play: ansible.Play{
			Tag:         "nomad",
			Roles:       []string{"common", "consul_template", "cni", "docker", "nomad", "node_exporter"},
			Vars:        vars,
			Hosts:       inventory.Names(pki.ConsulTemplateNodes(inv)),
			Secrets:     secrets,
			NodeSecrets: map[string]map[string]string{pki.TemplateTokensVar: tokens},
		},
	}, nil
}

// dockerVars sets the docker role's variables: the engine the clients get
// (config.Platform.DockerEngine) and the image archives they load.
func dockerVars(cfg *config.Platform, vars map[string]any) error {
	d := cfg.DockerEngine()
	vars["docker_engine"] = d != nil
	if d == nil {
		return nil
	}
	daemon, err := d.DaemonJSON()
	if err != nil {
		return fmt.Errorf("docker daemon: %w", err)
	}
	vars["docker_package"], vars["docker_daemon_json"] = d.Package, daemon
	images := []map[string]any{}
	if d.Images != "" {
		archives, err := imagearchive.Dir(cfg.Path(d.Images))
		if err != nil {
			return fmt.Errorf("docker images: %w", err)
		}
		for _, a := range archives {
			images = append(images, map[string]any{"src": a.Path, "id": a.ID, "tags": a.Tags})
		}
	}
	vars["docker_images"] = images
	return nil
}

// service asks each node's agent for the leader; status/leader needs no
// token. On the servers it also asks node-exporter, which the start play
// starts beside the agent there (the clients run it as a job).
func service(e *stages.Env) cluster.Service {
	svc := cluster.Service{Name: "nomad", Leader: func(ctx context.Context, n inventory.Node) (string, error) {
		c, err := cluster.NomadAgent(e, n, "")
		if err != nil {
			return "", err
		}
		return c.Status().Leader()
	}}
	if e.Config.Jobs.NodeExporter.Enabled {
		svc.Beside = func(ctx context.Context, n inventory.Node) string {
			if !n.Has(inventory.RoleServer) || n.Has(inventory.RoleClient) {
				return ""
			}
			if err := nodeExporterAnswers(ctx, n); err != nil {
				return "node-exporter"
			}
			return ""
		}
	}
	return svc
}

// nodeExporterAnswers asks a server's node-exporter for its page.
func nodeExporterAnswers(ctx context.Context, n inventory.Node) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	u := "http://" + net.JoinHostPort(n.Address(), strconv.Itoa(stages.NodeExporterPort)) + "/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req) // no proxy
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

// Plan compares the Ansible inputs and asks every agent and the cluster.
func (s *Stage) Plan(ctx context.Context, e *stages.Env) ([]stages.Change, error) {
	p := e.Plan(false)
	err := converge(ctx, e, p)
	return stages.WithKnown(p.Changes, err, func() []stages.Change { return knownChanges(e) })
}

// knownChanges is what a first run does, as far as the configuration tells
// before the nodes, Vault, the CA and Consul exist: shown while the stage
// waits.
func knownChanges(e *stages.Env) []stages.Change {
	out := []stages.Change{
		{Action: reconcile.Install, Target: "nomad on " + stages.PlannedNodes(e.Config, "")},
		{Action: reconcile.Bootstrap, Target: "nomad ACLs"},
	}
	for _, ns := range slices.Sorted(maps.Keys(namespaces(e.Config))) {
		out = append(out, stages.Change{Action: reconcile.Create, Target: "nomad namespace " + ns})
	}
	for _, t := range tokens(e.Config) {
		out = append(out, stages.Change{Action: reconcile.Create, Target: "nomad token " + t.name})
	}
	return out
}

// Apply converges the agents, the ACL system and Vault's JWT trust.
func (s *Stage) Apply(ctx context.Context, e *stages.Env) error {
	return converge(ctx, e, e.Plan(true))
}

// converge records in p, and makes when p applies, what the agents, the ACL
// system and Vault's trust in Nomad lack.
func converge(ctx context.Context, e *stages.Env, p *reconcile.Plan) error {
	d, err := load(e)
	if err != nil {
		return err
	}
	pending, err := ansible.Pending(e, d.inv, d.play)
	if err != nil {
		return err
	}
	svc := service(e)
	as := svc.Probe(ctx, d.inv.Nodes)
	play := d.play
	play.Leader = as.LeaderNode()
	// None before the ACL bootstrap, when no server runs yet to restart.
	tok, _, err := e.Secrets.Get(stages.SecretNomadBootstrapToken)
	if err != nil {
		return err
	}
	play.LeaderToken = strings.TrimSpace(tok)
	if err := svc.Converge(p, pending, as, ansible.Run(ctx, e, d.inv, play)); err != nil {
		return err
	}
	servers := d.inv.WithRole(inventory.RoleServer)
	if err := cluster.RecordOutputs(p, e.State, map[string]string{
		stages.OutNomadAddr:          stages.NomadAddr(servers[0]),
		stages.OutNomadCACert:        e.CAFile("nomad"),
		stages.OutNomadTLSServerName: e.NomadServerName(),
	}); err != nil {
		return err
	}
	if p.Apply {
		e.Step("waiting for the nomad leader")
		if as, err = svc.WaitLeader(ctx, d.inv); err != nil {
			return err
		}
	} else if as.Leader() == "" {
		if len(p.Changes) == 0 {
			p.Planned(reconcile.Wait, "nomad leader election", "")
		}
		p.Planned(reconcile.Bootstrap, "nomad ACLs, namespaces, policies and tokens", "")
		if _, ok := e.RestoreSnapshot("nomad"); ok {
			p.Planned(reconcile.Restore, "nomad", restoreDetail)
		}
		return nil
	}
	return convergeACL(ctx, e, d, as, p)
}

// waitCaughtUp waits until every server has caught up with the cluster
// (cluster.Service.WaitCaughtUp).
func waitCaughtUp(ctx context.Context, e *stages.Env, inv *inventory.Inventory, mgmt string) error {
	return service(e).WaitCaughtUp(ctx, inv, func(ctx context.Context, n inventory.Node) (uint64, uint64, error) {
		c, err := cluster.NomadAgent(e, n, mgmt)
		if err != nil {
			return 0, 0, err
		}
		self, err := c.Agent().Self()
		if err != nil {
			return 0, 0, err
		}
		ai, _ := strconv.ParseUint(self.Stats["raft"]["applied_index"], 10, 64)
		ci, _ := strconv.ParseUint(self.Stats["raft"]["commit_index"], 10, 64)
		return ai, ci, nil
	})
}

func never(error) bool { return false }

// waitClients waits until every client node is ready with a healthy task
// driver.
func waitClients(ctx context.Context, e *stages.Env, inv *inventory.Inventory, mgmt string) error {
	c, err := cluster.NomadAgent(e, inv.WithRole(inventory.RoleServer)[0], mgmt)
	if err != nil {
		return err
	}
	var nodes []*nomadapi.NodeListStub
	err = poll.Retry(ctx, 2*time.Minute, time.Second, func() error {
		nodes, _, _ = c.Nodes().List((&nomadapi.QueryOptions{}).WithContext(ctx))
		ready := map[string]bool{}
		var ineligible []string
		for _, n := range nodes {
			ready[n.Name] = n.Status == "ready" && n.SchedulingEligibility == "eligible" && anyDriverHealthy(n)
			if _, ok := inv.Node(n.Name); ok && n.Status == "ready" && n.SchedulingEligibility != "eligible" {
				ineligible = append(ineligible, n.Name)
			}
		}
		var notReady []string
		for _, n := range inv.WithRole(inventory.RoleClient) {
			if !ready[n.Name] {
				notReady = append(notReady, n.Name)
			}
		}
		if len(ineligible) > 0 {
			// Drained by hand: making it eligible again is the operator's
			// call.
			return fmt.Errorf("nomad clients not eligible for scheduling: %s (drained by hand?); `nomad node eligibility -enable <node id>` (ids: `nomad node status`) makes them eligible again", strings.Join(ineligible, ", "))
		}
		if len(notReady) > 0 {
			return fmt.Errorf("nomad clients not ready: %s; see %s", strings.Join(notReady, ", "), service(e).LogHint(inv, notReady[0]))
		}
		return nil
	}, never)
	if err != nil {
		return err
	}
	warnNoIsolation(e, nodes)
	return nil
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

// Status reports each agent, the leader and client readiness.
func (s *Stage) Status(ctx context.Context, e *stages.Env) ([]stages.StatusLine, error) {
	inv, err := e.Inventory()
	if err != nil {
		return nil, nil
	}
	if _, err := os.Stat(e.CAFile("nomad")); err != nil {
		return nil, nil
	}
	tok, _, _ := e.Secrets.Get(stages.SecretNomadBootstrapToken)
	svc := service(e)
	as := svc.Probe(ctx, inv.Nodes)
	leader := as.Leader()
	nodeStatus, versions := map[string]string{}, map[string]string{}
	if leader != "" && tok != "" {
		if c, err := cluster.NomadAgent(e, as.Server(), tok); err == nil {
			if nodes, _, err := c.Nodes().List((&nomadapi.QueryOptions{}).WithContext(ctx)); err == nil {
				for _, n := range nodes {
					nodeStatus[n.Name], versions[n.Name] = n.Status, n.Version
				}
			}
			if ms, err := c.Agent().Members(); err == nil {
				for _, m := range ms.Members {
					name, _, _ := strings.Cut(m.Name, ".") // <node>.<region>
					versions[name] = m.Tags["build"]
				}
			}
		}
	}
	var out []stages.StatusLine
	for _, a := range as {
		l := svc.Status(a, leader)
		if st, ok := nodeStatus[a.Node.Name]; ok && !a.Node.Has(inventory.RoleServer) {
			l.Detail = "node " + st
			l.Healthy = l.Healthy && st == "ready"
		}
		if v := versions[a.Node.Name]; v != "" {
			l.Detail = strings.TrimPrefix(l.Detail+", v"+v, ", ")
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
