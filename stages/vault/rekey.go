package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// rekeyNextSecret holds the new unseal keys of a rekey until Vault has
// verified them and they replace the stored ones.
const rekeyNextSecret = "vault/init-next.json"

// Rekey replaces Vault's unseal keys: as many shares and the same threshold
// as the stored ones. The rekey requires verification, so the new keys do
// nothing until the stored copy has proved them: Vault hands them out
// once, they are stored, and only then submitted back to activate them. A
// run killed before they were stored cancels that rekey and starts again;
// one killed after carries on with the stored keys.
func Rekey(ctx context.Context, e *stages.Env) error {
	init, err := LoadInit(e)
	if err != nil || init == nil {
		return errors.Join(err, errors.New("vault has no stored unseal keys; run bootstrap up first"))
	}
	if init.PGPEncrypted {
		return errors.New("the unseal keys are encrypted to vault { pgp_keys }: their holders rekey with `vault operator rekey`")
	}
	_, nodes, err := vaultNodes(e)
	if err != nil {
		return err
	}
	var c *vaultapi.Client
	for _, h := range probe(ctx, e, nodes) {
		if h.up() && h.health.Initialized && !h.health.Sealed && !h.health.Standby {
			c = h.client
		}
	}
	if c == nil {
		return errors.New("vault has no active, unsealed node; run bootstrap up first")
	}
	next, err := loadNext(e)
	if err != nil {
		return err
	}
	if next == nil {
		if next, err = rekey(ctx, e, c, init); err != nil {
			return err
		}
	}
	st, err := c.Sys().RekeyStatusWithContext(ctx)
	if err != nil {
		return fmt.Errorf("vault rekey status: %w", err)
	}
	if st.Started {
		if err := verify(ctx, c, next); err != nil {
			return err
		}
	}
	crashpoint.Hit("vault:rekey-after-verify")
	b, err := json.MarshalIndent(next, "", "  ")
	if err != nil {
		return err
	}
	if err := e.Secrets.Put(stages.SecretVaultInit, string(b)); err != nil {
		return err
	}
	if err := e.Secrets.Delete(rekeyNextSecret); err != nil {
		return err
	}
	e.Step("vault rekeyed: %d new unseal key share(s), threshold %d, in %s; the old ones open nothing", len(next.KeysB64), next.Threshold, e.Secrets.Path(stages.SecretVaultInit))
	return nil
}

// rekey has Vault make new keys and stores them before anything else.
func rekey(ctx context.Context, e *stages.Env, c *vaultapi.Client, init *InitData) (*InitData, error) {
	st, err := c.Sys().RekeyStatusWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("vault rekey status: %w", err)
	}
	if st.Started {
		// A run died before storing that rekey's keys: they were never
		// activated.
		if err := c.Sys().RekeyCancelWithContextWithNonce(ctx, st.Nonce); err != nil {
			return nil, fmt.Errorf("cancel an unfinished vault rekey: %w", err)
		}
	}
	st, err = c.Sys().RekeyInitWithContext(ctx, &vaultapi.RekeyInitRequest{
		SecretShares: len(init.KeysB64), SecretThreshold: init.Threshold, RequireVerification: true,
	})
	if err != nil {
		return nil, fmt.Errorf("vault rekey: %w", err)
	}
	var resp *vaultapi.RekeyUpdateResponse
	for i := 0; i < init.Threshold && (resp == nil || !resp.Complete); i++ {
		if resp, err = c.Sys().RekeyUpdateWithContext(ctx, init.KeysB64[i], st.Nonce); err != nil {
			return nil, fmt.Errorf("vault rekey: %w", err)
		}
	}
	if resp == nil || !resp.Complete {
		return nil, errors.New("vault rekey: the stored key shares did not complete it")
	}
	e.Secrets.Redactor().Add(append(append([]string{}, resp.KeysB64...), resp.Keys...)...)
	crashpoint.Hit("vault:rekey-before-store")
	next := *init
	next.KeysB64, next.Time = resp.KeysB64, time.Now().UTC()
	b, err := json.Marshal(next)
	if err != nil {
		return nil, err
	}
	if err := e.Secrets.Put(rekeyNextSecret, string(b)); err != nil {
		return nil, fmt.Errorf("store the new vault keys: %w", err)
	}
	crashpoint.Hit("vault:rekey-before-verify")
	return &next, nil
}

// verify submits the new keys to activate them.
func verify(ctx context.Context, c *vaultapi.Client, next *InitData) error {
	vs, err := c.Sys().RekeyVerificationStatusWithContext(ctx)
	if err != nil {
		return fmt.Errorf("vault rekey verification: %w", err)
	}
	// Shares go in order: a killed run's progress says which are in.
	for i := vs.Progress; i < next.Threshold; i++ {
		r, err := c.Sys().RekeyVerificationUpdateWithContext(ctx, next.KeysB64[i], vs.Nonce)
		if err != nil {
			return fmt.Errorf("vault rekey verification: %w", err)
		}
		if r.Complete {
			return nil
		}
	}
	return errors.New("vault rekey verification: the new key shares did not complete it")
}

func loadNext(e *stages.Env) (*InitData, error) {
	s, ok, err := e.Secrets.Get(rekeyNextSecret)
	if err != nil || !ok {
		return nil, err
	}
	var d InitData
	if err := json.Unmarshal([]byte(s), &d); err != nil || len(d.KeysB64) == 0 {
		return nil, fmt.Errorf("%s is corrupt: %v", e.Secrets.Path(rekeyNextSecret), err)
	}
	return &d, nil
}
