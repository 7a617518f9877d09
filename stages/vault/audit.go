package vault

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/pki"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Every request Vault serves is written to a file audit device. Vault
// refuses requests it cannot audit, so the log is complete; and it HMACs
// every secret in it (tokens, secret IDs, passwords, issued keys) unless
// log_raw is set, which bootstrap never does: the log is safe to keep and
// to ship.
//
// The audit configuration is one for the whole raft cluster, so each node
// gets the same file_path and writes its own file there. Only the active
// node handles (and so audits) requests; after a failover the new active
// node's file continues the log.
const (
	auditDevice = "file"
	// auditFileSystemd is the log on machines where systemd runs Vault, next
	// to the other logs of the machine.
	auditFileSystemd = "/var/log/vault/audit.log"
	// auditFileProcess is the log where Vault runs as a plain process
	// (the local provider, service_manager = "process"): relative to the
	// node's own directory, which is Vault's working directory there
	// (start-stop-daemon --chdir). All local nodes share one machine, so
	// only a relative path gives each its own file under one cluster-wide
	// setting.
	auditFileProcess = "logs/vault/audit.log"
	// auditMode keeps the log to Vault's own user.
	auditMode = "0600"
)

// auditFile is the file_path of the audit device for these nodes. The
// vault role makes its directory ({{ log_root }}/vault).
func auditFile(e *stages.Env, nodes []inventory.Node) string {
	if nodes[0].Local != nil {
		return auditFileProcess
	}
	if m := e.Config.Provider.Machines(); m != nil && m.ServiceManager == "process" {
		return auditFileProcess
	}
	return auditFileSystemd
}

// auditOptions are the options the audit device must have, exactly: any
// other (log_raw = true, say) is drift.
func auditOptions(e *stages.Env, nodes []inventory.Node) map[string]string {
	return map[string]string{"file_path": auditFile(e, nodes), "mode": auditMode}
}

const auditTarget = "vault audit device " + auditDevice

// audit makes the audit device match want. A device with other options is
// replaced: Vault cannot change an audit device in place.
func audit(ctx context.Context, p *reconcile.Plan, c *vaultapi.Client, want map[string]string) error {
	devs, err := c.Sys().ListAuditWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list vault audit devices: %w", err)
	}
	enable := func() error {
		return c.Sys().EnableAuditWithOptionsWithContext(ctx, auditDevice, &vaultapi.EnableAuditOptions{
			Type:        auditDevice,
			Description: "bootstrap: every request, secrets HMAC'd",
			Options:     want,
		})
	}
	have, ok := devs[auditDevice+"/"]
	switch {
	case !ok:
		return p.Do(reconcile.Enable, auditTarget, auditDetail(want), enable)
	case have.Type != auditDevice || !maps.Equal(have.Options, want):
		detail := fmt.Sprintf("type %s, options %s → %s", have.Type, fmtOptions(have.Options), fmtOptions(want))
		return p.Do(reconcile.Update, auditTarget, detail, func() error {
			if err := c.Sys().DisableAuditWithContext(ctx, auditDevice); err != nil {
				return fmt.Errorf("disable the old device: %w", err)
			}
			return enable()
		})
	}
	return nil
}

func auditDetail(want map[string]string) string {
	return fmt.Sprintf("every request, secrets HMAC'd, to %s on each vault node, mode %s", want["file_path"], want["mode"])
}

func fmtOptions(o map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(o)) {
		parts = append(parts, k+"="+o[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// adminClient returns a client of an unsealed node carrying the admin token
// (the root token before the pki stage made the admin identity).
func adminClient(ctx context.Context, e *stages.Env, hs []nodeHealth) (*vaultapi.Client, error) {
	for _, h := range hs {
		if !h.up() || h.health.Sealed || !h.health.Initialized {
			continue
		}
		tok, err := pki.Token(ctx, e, h.client)
		if err != nil {
			return nil, err
		}
		c, err := h.client.Clone()
		if err != nil {
			return nil, err
		}
		c.SetToken(tok)
		return c, nil
	}
	return nil, errors.New("no unsealed vault node")
}
