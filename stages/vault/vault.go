// Package vault is the stage that runs Vault: Ansible installs and starts it
// on the vault nodes with integrated raft storage behind TLS, then the stage
// initialises it once, keeps the unseal keys and root token in the secret
// store, unseals every node, enables the file audit device and, with
// ha = true, checks the raft cluster.
//
// With vault { pgp_keys }, the key shares are stored encrypted to those
// keys and bootstrap cannot unseal Vault: after init and after every
// restart the key holders unseal it with `vault operator unseal`, and the
// stage stops with instructions until they have.
package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/ansible"
	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Port is Vault's API port on every node.
const Port = 8200

// Stage is the vault stage.
type Stage struct{}

// New returns the vault stage.
func New() *Stage { return &Stage{} }

// Name is "vault".
func (*Stage) Name() string { return "vault" }

// InitData is what sys/init returned, kept in the secret store.
type InitData struct {
	// KeysB64 are the unseal key shares, base64. With PGPEncrypted each is
	// instead a PGP message, base64, encrypted to the key of the same index
	// in vault { pgp_keys }, holding the share in hex.
	KeysB64      []string  `json:"keys_base64"`
	PGPEncrypted bool      `json:"pgp_encrypted,omitempty"`
	RootToken    string    `json:"root_token"`
	Threshold    int       `json:"threshold"`
	Node         string    `json:"node"`
	Time         time.Time `json:"time"`
}

// The intent record is written (and so the store test-written) before
// sys/init: if a run dies after Vault initialised but before the keys were
// stored, the next run knows that Vault holds nothing but our lost init.
const intentSecret = "vault/init-intent.json"

// LoadInit returns the stored init data, or nil.
func LoadInit(e *stages.Env) (*InitData, error) {
	s, ok, err := e.Secrets.Get(stages.SecretVaultInit)
	if err != nil || !ok {
		return nil, err
	}
	var d InitData
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		return nil, fmt.Errorf("%s is corrupt: %w", e.Secrets.Path(stages.SecretVaultInit), err)
	}
	return &d, nil
}

// Addr is the API address of a Vault node.
func Addr(n inventory.Node) string {
	return "https://" + net.JoinHostPort(n.APIAddress(), strconv.Itoa(Port))
}

// Client returns an API client for addr that trusts the bootstrap CA. It
// ignores VAULT_* variables of the environment: the stage talks to its own
// Vault only.
func Client(e *stages.Env, addr string) (*vaultapi.Client, error) {
	cfg := vaultapi.DefaultConfig()
	cfg.Address = addr
	cfg.Timeout = 15 * time.Second
	cfg.MaxRetries = 0
	if err := cfg.ConfigureTLS(&vaultapi.TLSConfig{CACert: caCertPath(e), TLSServerName: apitls.VaultServerName}); err != nil {
		return nil, fmt.Errorf("vault TLS: %w", err)
	}
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.ClearToken()
	c.ClearNamespace()
	return c, nil
}

type nodeHealth struct {
	node   inventory.Node
	client *vaultapi.Client
	health *vaultapi.HealthResponse
	err    error
}

func (h nodeHealth) up() bool { return h.err == nil }

func vaultNodes(e *stages.Env) (*inventory.Inventory, []inventory.Node, error) {
	inv, err := e.Inventory()
	if err != nil {
		return nil, nil, err
	}
	nodes := inv.WithRole(inventory.RoleVault)
	if len(nodes) == 0 {
		return nil, nil, fmt.Errorf("no node has the vault role in %s", e.State.Output(stages.OutInventory))
	}
	return inv, nodes, nil
}

func probe(ctx context.Context, e *stages.Env, nodes []inventory.Node) []nodeHealth {
	out := make([]nodeHealth, len(nodes))
	for i, n := range nodes {
		out[i].node = n
		c, err := Client(e, Addr(n))
		if err != nil {
			out[i].err = err
			continue
		}
		out[i].client = c
		out[i].health, out[i].err = health(ctx, c)
	}
	return out
}

// health reads sys/health without Vault's status-code games: every state
// answers 200 so uninitialised and sealed nodes are reported, not errors.
func health(ctx context.Context, c *vaultapi.Client) (*vaultapi.HealthResponse, error) {
	params := map[string][]string{}
	for _, p := range []string{"uninitcode", "sealedcode", "standbycode", "perfstandbycode", "drsecondarycode",
		// Vault 1.19+: a standby that lost touch with the active node (474),
		// and a node removed from the raft cluster (530).
		"haunhealthycode", "removedcode"} {
		params[p] = []string{"200"}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.Logical().ReadRawWithDataWithContext(ctx, "sys/health", params)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var h vaultapi.HealthResponse
	if err := resp.DecodeJSON(&h); err != nil {
		return nil, err
	}
	return &h, nil
}

func (s *Stage) play(e *stages.Env, nodes []inventory.Node) ansible.Play {
	return ansible.Play{Tag: "vault", Hosts: inventory.Names(nodes), Roles: []string{"common", "vault"}}
}

// Plan asks every Vault node for its health and compares the TLS files and
// the Ansible inputs with what was last applied.
func (s *Stage) Plan(ctx context.Context, e *stages.Env) ([]stages.Change, error) {
	if init, err := LoadInit(e); err == nil {
		warnPGPMismatch(e, init)
	}
	p := e.Plan(false)
	if err := s.converge(ctx, e, p); err != nil {
		return stages.WithKnown(nil, err, func() []stages.Change { return knownChanges(e) })
	}
	return p.Changes, nil
}

// knownChanges is what a first run does, as far as the configuration tells
// before the nodes exist: shown while the stage waits for provision.
func knownChanges(e *stages.Env) []stages.Change {
	nodes := stages.PlannedNodes(e.Config, inventory.RoleVault)
	return []stages.Change{
		{Action: reconcile.Create, Target: "vault bootstrap CA"},
		{Action: reconcile.Create, Target: "vault TLS certificates for " + nodes},
		{Action: reconcile.Install, Target: "vault on " + nodes},
		{Action: reconcile.Init, Target: "vault"},
		{Action: reconcile.Unseal, Target: "vault on " + nodes},
		{Action: reconcile.Enable, Target: auditTarget},
	}
}

// Apply converges the nodes, initialises Vault once and unseals every node.
func (s *Stage) Apply(ctx context.Context, e *stages.Env) error {
	return s.converge(ctx, e, e.Plan(true))
}

// converge decides what to change, for Plan and Apply alike; with p.Apply
// it makes each change as it finds it. Every step is safe to repeat, so a
// run killed anywhere is finished by the next.
func (s *Stage) converge(ctx context.Context, e *stages.Env, p *reconcile.Plan) error {
	inv, nodes, err := vaultNodes(e)
	if err != nil {
		return err
	}
	if err := certificates(e, p, nodes); err != nil {
		return err
	}
	tlsChanged := len(p.Changes) > 0 || tlsStale(e, nodes)
	pending, err := ansible.Pending(e, inv, s.play(e, nodes))
	if err != nil {
		return err
	}
	hs := probe(ctx, e, nodes)
	init, err := LoadInit(e)
	if err != nil {
		return err
	}
	// One Ansible run installs, configures and starts Vault everywhere: the
	// first change that needs it runs it, the others are made by that run.
	play := func() error { return ansible.Converge(ctx, e, inv, s.play(e, nodes), nil) }
	once := func() func() error { f := play; play = nil; return f }
	switch {
	case (len(pending) > 0 || tlsChanged) && rollable(hs, init):
		if err := s.roll(ctx, e, p, inv, nodes, hs, init, pending, tlsChanged); err != nil {
			return err
		}
	case len(pending) > 0:
		err = p.Do(reconcile.Install, "vault on "+strings.Join(inventory.Names(nodes), ", "), reasons(pending), once())
	case tlsChanged:
		err = p.Do(reconcile.Update, "vault TLS files on the nodes", "", once())
	}
	if err != nil {
		return err
	}
	for _, h := range hs {
		if !h.up() {
			if err := p.Do(reconcile.Start, "vault on "+h.node.Name, "not answering: "+shortErr(h.err), once()); err != nil {
				return err
			}
		}
	}
	if p.Apply {
		if err := e.State.SetOutput(stages.OutVaultAddr, Addr(nodes[0])); err != nil {
			return err
		}
		if err := e.State.SetOutput(stages.OutVaultCACert, caCertPath(e)); err != nil {
			return err
		}
		if hs, err = waitUp(ctx, e, nodes); err != nil {
			return err
		}
	}

	// A node that does not answer (only while planning) may be initialised
	// or not: nothing is decided about it.
	anyInit := false
	for _, h := range hs {
		anyInit = anyInit || h.up() && h.health.Initialized
	}
	snap, restoring := e.RestoreSnapshot("vault")
	switch {
	case restoring && (hs[0].up() || !p.Apply):
		err = p.Do(reconcile.Restore, "vault", restoreDetail, func() error {
			if err := s.restore(ctx, e, inv, nodes, snap); err != nil {
				return err
			}
			hs, err = waitUp(ctx, e, nodes)
			return err
		})
	case anyInit && init == nil:
		if _, ok, err := e.Secrets.Get(intentSecret); err != nil || !ok {
			return fmt.Errorf("vault is already initialised but no keys are stored in %s: bootstrap does not adopt a Vault it did not initialise; put its init output (keys_base64, root_token) there as JSON to adopt it", e.Secrets.Path(stages.SecretVaultInit))
		}
		err = p.Do(reconcile.Reset, "vault", "a run died between sys/init and storing the keys; the empty Vault is wiped and initialised again", func() error {
			if init, err = s.recoverLostInit(ctx, e, inv, nodes); err != nil {
				return err
			}
			hs, err = waitUp(ctx, e, nodes)
			return err
		})
	case !anyInit && hs[0].up():
		// Initialised on the first node: the others join its raft cluster
		// (retry_join) as they are unsealed.
		err = p.Do(reconcile.Init, "vault", initDetail(e, hs[0].node), func() error {
			init, err = initVault(ctx, e, hs[0])
			return err
		})
	}
	if err != nil {
		return err
	}
	byHand := init != nil && init.PGPEncrypted || init == nil && len(e.Config.Vault.PGPKeysB64) > 0
	ready := true
	for _, h := range hs {
		switch {
		case !h.up():
			ready = false
		case h.health.Sealed && byHand:
			err = p.Do(reconcile.Unseal, "vault on "+h.node.Name, "by hand, with `vault operator unseal`: the key shares are encrypted to vault { pgp_keys }; `bootstrap up` says how", func() error {
				return manualUnseal(ctx, e, nodes, init)
			})
		case h.health.Sealed:
			err = p.Do(reconcile.Unseal, "vault on "+h.node.Name, "", func() error { return unseal(ctx, h, init) })
		}
		if err != nil {
			return err
		}
		ready = ready && h.up() && h.health.Initialized && !h.health.Sealed
	}
	if !p.Apply && (!ready || init == nil || len(p.Changes) > 0) {
		// Vault cannot be asked for its raft peers and audit devices yet.
		// The audit device is enabled right after the first unseal; a
		// Vault initialised before has it, or the plan says so once it can
		// be asked.
		if !anyInit && init == nil {
			p.Planned(reconcile.Enable, auditTarget, auditDetail(auditOptions(e, nodes)))
		}
		return nil
	}
	if p.Apply {
		if err := waitActive(ctx, e, nodes); err != nil {
			return err
		}
		hs = probe(ctx, e, nodes)
	}
	if len(nodes) > 1 {
		if err := voters(ctx, e, p, nodes, hs); err != nil {
			return err
		}
	}
	c, err := adminClient(ctx, e, hs)
	if err != nil {
		return err
	}
	return audit(ctx, p, c, auditOptions(e, nodes))
}

func initDetail(e *stages.Env, n inventory.Node) string {
	v := e.Config.Vault
	d := fmt.Sprintf("on %s, %d key shares, threshold %d", n.Name, v.KeyShares, v.KeyThreshold)
	if len(v.PGPKeysB64) > 0 {
		d += ", each share encrypted to one of pgp_keys: bootstrap cannot unseal it, you do (`vault operator unseal`)"
	}
	return d
}

// warnPGPMismatch says when vault { pgp_keys } and the stored shares
// disagree: the setting only takes effect when Vault is initialised.
func warnPGPMismatch(e *stages.Env, init *InitData) {
	if init == nil {
		return
	}
	path := e.Secrets.Path(stages.SecretVaultInit)
	switch want := len(e.Config.Vault.PGPKeysB64) > 0; {
	case want && !init.PGPEncrypted:
		e.Warnf("vault { pgp_keys } is set, but this Vault was initialised without it: the key shares in %s are not encrypted. pgp_keys applies at init only; to encrypt the shares, rekey Vault (`vault operator rekey -init -pgp-keys=...`), or start over with `bootstrap down`", path)
	case !want && init.PGPEncrypted:
		e.Warnf("the key shares in %s are encrypted to PGP keys (vault { pgp_keys } was set at init); bootstrap still cannot unseal Vault by itself", path)
	}
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s) > 120 {
		s = s[i+2:]
	}
	return s
}

// manualUnseal returns an error that tells the key holders how to unseal
// the nodes that are sealed, or nil when none is: with PGP-encrypted shares
// only they can.
func manualUnseal(ctx context.Context, e *stages.Env, nodes []inventory.Node, init *InitData) error {
	var sealed []inventory.Node
	for _, h := range probe(ctx, e, nodes) {
		// A raft follower answers "not initialised" until it is unsealed
		// and joins; it is sealed all the same.
		if !h.up() || h.health.Sealed || !h.health.Initialized {
			sealed = append(sealed, h.node)
		}
	}
	if len(sealed) == 0 {
		return nil
	}
	return errors.New(manualUnsealHelp(e, sealed, init))
}

// manualUnsealHelp explains how to unseal nodes whose key shares are
// encrypted to PGP keys. It holds no secret: paths and addresses only.
func manualUnsealHelp(e *stages.Env, sealed []inventory.Node, init *InitData) string {
	path := e.Secrets.Path(stages.SecretVaultInit)
	var b strings.Builder
	fmt.Fprintf(&b, "vault is sealed on %s and bootstrap cannot unseal it: its %d key shares are encrypted to the PGP keys of vault { pgp_keys }.\n", strings.Join(inventory.Names(sealed), ", "), len(init.KeysB64))
	b.WriteString("Unseal it by hand, then run bootstrap up again. The holder of pgp_keys[N] decrypts share N (N from 0) with\n")
	fmt.Fprintf(&b, "    jq -r '.keys_base64[N]' %s | base64 -d | gpg -dq\n", path)
	fmt.Fprintf(&b, "and %d of the holders enter their share at the prompt of `vault operator unseal` on each sealed node, in this order:\n", init.Threshold)
	for _, n := range sealed {
		fmt.Fprintf(&b, "    VAULT_ADDR=%s VAULT_CACERT=%s vault operator unseal\n", Addr(n), caCertPath(e))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// tlsStale reports whether a node's TLS files on disk differ from what the
// vault role copied: a run issued new ones and died before copying them.
func tlsStale(e *stages.Env, nodes []inventory.Node) bool {
	for _, n := range nodes {
		if n.Local == nil {
			continue // remote nodes: the digest covers changes through the next converge
		}
		want, err1 := os.ReadFile(certPath(e, n.Name))
		have, err2 := os.ReadFile(n.Local.Root + "/tls/vault/vault.pem")
		if err1 != nil || err2 != nil || string(want) != string(have) {
			return true
		}
	}
	return false
}

// waitUp waits until every node answers.
func waitUp(ctx context.Context, e *stages.Env, nodes []inventory.Node) ([]nodeHealth, error) {
	var hs []nodeHealth
	err := poll.Retry(ctx, 90*time.Second, 300*time.Millisecond, func() error {
		hs = probe(ctx, e, nodes)
		var down []string
		for _, h := range hs {
			if !h.up() {
				down = append(down, fmt.Sprintf("%s (%s)", h.node.Name, shortErr(h.err)))
			}
		}
		if len(down) > 0 {
			return errors.New(strings.Join(down, ", "))
		}
		return nil
	}, poll.Never)
	if err != nil {
		return nil, fmt.Errorf("vault does not answer on %w; see the node's log (e.g. %s)", err, logHint(nodes[0]))
	}
	return hs, nil
}

func logHint(n inventory.Node) string {
	if n.Local != nil {
		return n.Local.Root + "/logs/vault.log"
	}
	return "journalctl -u vault on " + n.Name
}

// initVault initialises Vault on one node. The key store is test-written
// first (the intent record), and the keys are stored before anything else
// happens.
func initVault(ctx context.Context, e *stages.Env, h nodeHealth) (*InitData, error) {
	if old, err := LoadInit(e); err != nil {
		return nil, err
	} else if old != nil {
		return nil, fmt.Errorf("vault on %s is not initialised, but keys of an earlier Vault (initialised %s on %s) are in %s; bootstrap never initialises over existing keys — if that Vault was wiped on purpose, move the file away and run again",
			h.node.Name, old.Time.Format(time.RFC3339), old.Node, e.Secrets.Path(stages.SecretVaultInit))
	}
	intent, _ := json.Marshal(map[string]any{"node": h.node.Name, "time": time.Now().UTC()})
	if err := e.Secrets.Put(intentSecret, string(intent)); err != nil {
		return nil, fmt.Errorf("test-write the key store before init: %w", err)
	}
	cfg := e.Config.Vault
	resp, err := h.client.Sys().InitWithContext(ctx, &vaultapi.InitRequest{
		SecretShares:    cfg.KeyShares,
		SecretThreshold: cfg.KeyThreshold,
		// Vault encrypts share i to key i; the plain shares never leave it.
		PGPKeys: cfg.PGPKeysB64,
	})
	if err != nil {
		return nil, fmt.Errorf("vault init on %s: %w", h.node.Name, err)
	}
	crashpoint.Hit("vault:after-init")
	d := &InitData{KeysB64: resp.KeysB64, PGPEncrypted: len(cfg.PGPKeysB64) > 0, RootToken: resp.RootToken, Threshold: cfg.KeyThreshold, Node: h.node.Name, Time: time.Now().UTC()}
	e.Secrets.Redactor().Add(append(append([]string{}, resp.KeysB64...), resp.Keys...)...)
	e.Secrets.Redactor().Add(resp.RootToken)
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := e.Secrets.Put(stages.SecretVaultInit, string(b)); err != nil {
		return nil, fmt.Errorf("store vault keys: %w", err)
	}
	if err := e.Secrets.Put(stages.SecretVaultRootToken, resp.RootToken); err != nil {
		return nil, err
	}
	crashpoint.Hit("vault:after-store-keys")
	if err := e.Secrets.Delete(intentSecret); err != nil {
		return nil, err
	}
	if d.PGPEncrypted {
		e.Step("vault initialised; its %d unseal key share(s), each encrypted to one of pgp_keys, and the root token are in %s", len(d.KeysB64), e.Secrets.Dir())
	} else {
		e.Step("vault initialised; %d unseal key share(s) and the root token are in %s", len(d.KeysB64), e.Secrets.Dir())
	}
	return d, nil
}

// recoverLostInit handles a run killed between sys/init and storing the
// keys: the intent record proves the Vault holds nothing but that init, so
// its storage is wiped and it is initialised again. Only local nodes can be
// wiped by bootstrap itself.
func (s *Stage) recoverLostInit(ctx context.Context, e *stages.Env, inv *inventory.Inventory, nodes []inventory.Node) (*InitData, error) {
	for _, n := range nodes {
		if n.Local == nil {
			return nil, fmt.Errorf("a previous run initialised vault but died before storing the keys; on real machines stop vault on %s, remove its data directory /opt/vault, and run again", strings.Join(inventory.Names(nodes), ", "))
		}
	}
	if err := s.wipe(ctx, e, inv, nodes); err != nil {
		return nil, fmt.Errorf("a previous run initialised vault but died before storing its keys: %w", err)
	}
	hs := probe(ctx, e, nodes)
	if err := e.Secrets.Delete(intentSecret); err != nil {
		return nil, err
	}
	return initVault(ctx, e, hs[0])
}

// unseal submits the key shares to a sealed node. Progress left by an
// interrupted run is reset first, so every share is counted once. A raft
// follower answers "not initialized" until its retry_join has fetched the
// leader's challenge; it is asked again until it takes the keys.
func unseal(ctx context.Context, h nodeHealth, init *InitData) error {
	err := poll.Retry(ctx, 90*time.Second, time.Second, func() error {
		st, err := h.client.Sys().SealStatusWithContext(ctx)
		if err != nil || !st.Sealed {
			return err
		}
		return submitKeys(ctx, h.client, st, init)
	}, poll.Never)
	if err != nil {
		return fmt.Errorf("vault on %s is still sealed: %w; see %s", h.node.Name, err, logHint(h.node))
	}
	return nil
}

// submitKeys unseals with the first threshold key shares, or says why the
// node is still sealed.
func submitKeys(ctx context.Context, c *vaultapi.Client, st *vaultapi.SealStatusResponse, init *InitData) error {
	if init.PGPEncrypted {
		// Never submit a PGP message as a key share: only its holder can
		// decrypt it (Apply stops before this with instructions).
		return errors.New("the key shares are encrypted to vault { pgp_keys }: unseal with `vault operator unseal`")
	}
	if st.Progress > 0 {
		if _, err := c.Sys().ResetUnsealProcessWithContext(ctx); err != nil {
			return fmt.Errorf("reset unseal progress: %w", err)
		}
	}
	for i := 0; i < init.Threshold && i < len(init.KeysB64); i++ {
		st, err := c.Sys().UnsealWithOptionsWithContext(ctx, &vaultapi.UnsealOpts{Key: init.KeysB64[i]})
		if err != nil {
			return err
		}
		crashpoint.Hit("vault:between-unseal-keys")
		if !st.Sealed {
			return nil
		}
	}
	// A follower applies the keys while it joins: the caller asks again.
	return errors.New("still sealed after the key shares, not yet joined")
}

// waitActive waits until the cluster has an active node.
func waitActive(ctx context.Context, e *stages.Env, nodes []inventory.Node) error {
	err := poll.Until(ctx, 60*time.Second, 300*time.Millisecond, func() (bool, error) {
		for _, h := range probe(ctx, e, nodes) {
			if h.up() && h.health.Initialized && !h.health.Sealed && !h.health.Standby {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("vault has no active node after unsealing; see %s: %w", logHint(nodes[0]), err)
	}
	return nil
}

// voters checks that every node is a voter of the raft cluster. Nodes join
// it by themselves (retry_join) once unsealed: applying waits until they
// have.
func voters(ctx context.Context, e *stages.Env, p *reconcile.Plan, nodes []inventory.Node, hs []nodeHealth) error {
	missing := func(hs []nodeHealth) ([]string, error) {
		peers, err := raftPeers(ctx, e, hs)
		var out []string
		for _, n := range nodes {
			if err == nil && !peers[n.Name] {
				out = append(out, n.Name)
			}
		}
		return out, err
	}
	if !p.Apply {
		names, err := missing(hs)
		for _, n := range names {
			p.Planned(reconcile.Join, n+" to the vault raft cluster", "")
		}
		return err
	}
	err := poll.Retry(ctx, 90*time.Second, time.Second, func() error {
		names, err := missing(probe(ctx, e, nodes))
		if err == nil && len(names) > 0 {
			err = fmt.Errorf("not yet voters: %s", strings.Join(names, ", "))
		}
		return err
	}, poll.Never)
	if err != nil {
		return fmt.Errorf("vault raft cluster incomplete: %w", err)
	}
	return nil
}

func raftPeers(ctx context.Context, e *stages.Env, hs []nodeHealth) (map[string]bool, error) {
	var lastErr error
	for _, h := range hs {
		if !h.up() || h.health.Sealed {
			continue
		}
		// The admin identity once the pki stage made it (logging in again
		// when its token expired), the root token before.
		tok, err := pki.Token(ctx, e, h.client)
		if err != nil {
			return nil, err
		}
		c, err := h.client.Clone()
		if err != nil {
			return nil, err
		}
		c.SetToken(tok)
		s, err := c.Logical().ReadWithContext(ctx, "sys/storage/raft/configuration")
		if err != nil {
			lastErr = err
			continue
		}
		peers := map[string]bool{}
		cfg, _ := s.Data["config"].(map[string]any)
		servers, _ := cfg["servers"].([]any)
		for _, srv := range servers {
			m, _ := srv.(map[string]any)
			if id, _ := m["node_id"].(string); id != "" {
				if voter, _ := m["voter"].(bool); voter {
					peers[id] = true
				}
			}
		}
		return peers, nil
	}
	if lastErr == nil {
		lastErr = errors.New("no unsealed vault node")
	}
	return nil, fmt.Errorf("read vault raft configuration: %w", lastErr)
}

// Status reports each Vault node's state.
func (s *Stage) Status(ctx context.Context, e *stages.Env) ([]stages.StatusLine, error) {
	_, nodes, err := vaultNodes(e)
	if err != nil {
		return nil, nil
	}
	init, _ := LoadInit(e)
	var out []stages.StatusLine
	for _, h := range probe(ctx, e, nodes) {
		l := stages.StatusLine{Component: "vault", Node: h.node.Name}
		switch {
		case !h.up():
			l.State, l.Detail = "down", shortErr(h.err)
		case !h.health.Initialized:
			l.State = "not initialised"
		case h.health.Sealed:
			l.State = "sealed"
		case h.health.Standby:
			l.State, l.Healthy = "standby", true
		default:
			l.State, l.Healthy = "active", true
		}
		if h.up() {
			l.Detail = "version " + h.health.Version
			if h.health.Sealed && init != nil && init.PGPEncrypted {
				l.Detail += "; key shares encrypted to pgp_keys: unseal with `vault operator unseal`"
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// reasons says why the play runs: the reason all pending nodes share, or
// each node's.
func reasons(pending map[string]string) string {
	var out []string
	for _, n := range slices.Sorted(maps.Keys(pending)) {
		out = append(out, n+": "+pending[n])
	}
	if len(slices.Compact(slices.Sorted(maps.Values(pending)))) == 1 {
		for _, r := range pending {
			return r
		}
	}
	return strings.Join(out, "; ")
}
