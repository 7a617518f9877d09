package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/ansible"
	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Snapshot writes a raft snapshot of Vault, taken by its active node, to w
// and returns the version of Vault that took it.
func Snapshot(ctx context.Context, e *stages.Env, w io.Writer) (string, error) {
	_, nodes, err := vaultNodes(e)
	if err != nil {
		return "", err
	}
	for _, h := range probe(ctx, e, nodes) {
		if !h.up() || !h.health.Initialized || h.health.Sealed || h.health.Standby {
			continue
		}
		c, err := adminClient(ctx, e, []nodeHealth{h})
		if err != nil {
			return "", err
		}
		if err := c.Sys().RaftSnapshotWithContext(ctx, w); err != nil {
			return "", fmt.Errorf("vault raft snapshot from %s: %w", h.node.Name, err)
		}
		return h.health.Version, nil
	}
	return "", errors.New("vault has no active, unsealed node; run bootstrap up first")
}

// restoreInitSecret holds the init of the empty Vault a backup is restored
// into, until the backup's snapshot has replaced it.
const restoreInitSecret = "restore/vault-init.json"

const restoreDetail = "from the backup: its secrets, PKI, policies and tokens, opened by the backup's unseal keys"

// restore puts the backup's raft snapshot into a Vault that holds nothing
// yet. A snapshot can only be restored through an unsealed Vault, so the
// first node is initialised with throwaway keys, kept until the snapshot
// is in; the snapshot brings the backup's keyring, and from then on
// the backup's keys (in the secret store) open it. Every step can be
// repeated after a kill: what Vault answers says how far it got.
func (s *Stage) restore(ctx context.Context, e *stages.Env, inv *inventory.Inventory, nodes []inventory.Node, snap string) error {
	h := probe(ctx, e, nodes[:1])[0]
	if !h.up() {
		return fmt.Errorf("vault on %s does not answer: %w", h.node.Name, h.err)
	}
	tmp, err := loadRestoreInit(e)
	if err != nil {
		return err
	}
	if !h.health.Initialized {
		if tmp, err = initThrowaway(ctx, e, h); err != nil {
			return err
		}
	}
	if tmp == nil {
		// Initialised, but no throwaway keys: either the snapshot is in and
		// the backup's keys open Vault, or a run died between init and
		// storing the throwaway keys.
		init, err := LoadInit(e)
		if err != nil || init == nil {
			return errors.Join(err, errors.New("the backup's vault keys are not in the secret store"))
		}
		st, err := h.client.Sys().SealStatusWithContext(ctx)
		if err != nil {
			return err
		}
		if !st.Sealed || init.PGPEncrypted {
			// Unsealed already, or only the key holders can tell.
			return e.RestoreDone("vault")
		}
		switch err := submitKeys(ctx, h.client, st, init); {
		case err == nil:
			return e.RestoreDone("vault")
		case !badRequest(err):
			return fmt.Errorf("unseal vault on %s: %w", h.node.Name, err)
		}
		// Only keys that were never stored open this Vault, and it holds
		// nothing else yet.
		if err := s.wipe(ctx, e, inv, nodes); err != nil {
			return fmt.Errorf("a restore died between initialising vault and storing its throwaway keys: %w", err)
		}
		return s.restore(ctx, e, inv, nodes, snap)
	}
	c, err := h.client.Clone()
	if err != nil {
		return err
	}
	c.SetToken(tmp.RootToken)
	st, err := c.Sys().SealStatusWithContext(ctx)
	if err != nil {
		return err
	}
	if st.Sealed {
		if err := submitKeys(ctx, c, st, tmp); err != nil {
			if !badRequest(err) {
				return fmt.Errorf("unseal vault on %s: %w", h.node.Name, err)
			}
			// The throwaway keys no longer open it: the backup's keyring
			// is in, a run died before it could say so.
			return restored(e)
		}
	}
	if err := waitActive(ctx, e, nodes[:1]); err != nil {
		return err
	}
	if _, err := c.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		// The throwaway token is gone: the snapshot is in. Vault is either
		// about to seal itself (see below) or was unsealed since.
		waitSealed(ctx, c, 15*time.Second)
		return restored(e)
	}
	f, err := os.Open(snap)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := c.Sys().RaftSnapshotRestoreWithContext(ctx, f, true); err != nil {
		return fmt.Errorf("restore the backup's raft snapshot into vault on %s: %w", h.node.Name, err)
	}
	crashpoint.Hit("vault:after-restore-snapshot")
	// Vault finds the backup's keyring a few seconds later, cannot read it
	// with the throwaway key and seals itself; until then it still answers
	// as unsealed.
	if err := waitSealed(ctx, c, time.Minute); err != nil {
		return fmt.Errorf("vault on %s took the backup's snapshot but did not seal itself to take the backup's keys: %w; see %s", h.node.Name, err, logHint(h.node))
	}
	e.Step("vault holds the backup's data; the backup's unseal keys open it")
	return restored(e)
}

func waitSealed(ctx context.Context, c *vaultapi.Client, timeout time.Duration) error {
	return poll.Until(ctx, timeout, 300*time.Millisecond, func() (bool, error) {
		st, err := c.Sys().SealStatusWithContext(ctx)
		return err == nil && st.Sealed, nil
	})
}

func restored(e *stages.Env) error {
	if err := e.Secrets.Delete(restoreInitSecret); err != nil {
		return err
	}
	return e.RestoreDone("vault")
}

// initThrowaway initialises the empty Vault the backup goes into, with
// keys that are thrown away once the snapshot is in. It has as many key
// shares and the same threshold as the backup's: Vault keeps the seal
// configuration it was unsealed with when the snapshot replaces its
// storage, and combines the backup's shares by it.
func initThrowaway(ctx context.Context, e *stages.Env, h nodeHealth) (*InitData, error) {
	backup, err := LoadInit(e)
	if err != nil || backup == nil {
		return nil, errors.Join(err, errors.New("the backup's vault keys are not in the secret store"))
	}
	resp, err := h.client.Sys().InitWithContext(ctx, &vaultapi.InitRequest{SecretShares: len(backup.KeysB64), SecretThreshold: backup.Threshold})
	if err != nil {
		return nil, fmt.Errorf("vault init on %s (for the restore): %w", h.node.Name, err)
	}
	crashpoint.Hit("vault:restore-after-init")
	e.Secrets.Redactor().Add(append(append([]string{resp.RootToken}, resp.KeysB64...), resp.Keys...)...)
	d := &InitData{KeysB64: resp.KeysB64, RootToken: resp.RootToken, Threshold: backup.Threshold, Node: h.node.Name, Time: time.Now().UTC()}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	if err := e.Secrets.Put(restoreInitSecret, string(b)); err != nil {
		return nil, fmt.Errorf("store the restore's throwaway vault keys: %w", err)
	}
	return d, nil
}

func loadRestoreInit(e *stages.Env) (*InitData, error) {
	s, ok, err := e.Secrets.Get(restoreInitSecret)
	if err != nil || !ok {
		return nil, err
	}
	var d InitData
	if err := json.Unmarshal([]byte(s), &d); err != nil || len(d.KeysB64) == 0 {
		return nil, fmt.Errorf("%s is corrupt: %v", e.Secrets.Path(restoreInitSecret), err)
	}
	return &d, nil
}

func badRequest(err error) bool {
	var re *vaultapi.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusBadRequest
}

// wipe stops Vault, removes its data and starts it empty: only for a Vault
// that holds nothing of value (an init whose keys were lost before anything
// was written). Only local nodes can be wiped by bootstrap itself.
func (s *Stage) wipe(ctx context.Context, e *stages.Env, inv *inventory.Inventory, nodes []inventory.Node) error {
	for _, n := range nodes {
		if n.Local == nil {
			return fmt.Errorf("on real machines stop vault on %s, remove its data directory /opt/vault, and run again", strings.Join(inventory.Names(nodes), ", "))
		}
	}
	e.Warnf("wiping the empty Vault whose keys were lost, and initialising it again")
	for _, n := range nodes {
		if err := cluster.StopLocal(ctx, n, "vault"); err != nil {
			return err
		}
		if err := os.RemoveAll(n.Local.Root + "/data/vault"); err != nil {
			return err
		}
	}
	if err := ansible.Converge(ctx, e, inv, s.play(e, nodes), nil); err != nil {
		return err
	}
	_, err := waitUp(ctx, e, nodes)
	return err
}
