package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	consulapi "github.com/hashicorp/consul/api"
	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/cluster"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// secretsMeta is the job meta key that changes with the job's Vault KV
// secrets. Nomad re-reads a KV secret only every few minutes; a changed
// meta replaces the allocations, which read the new secret at once, so a
// rotated token is in use when the stage finishes (and the old one can go).
const secretsMeta = "bootstrap_secrets"

// secretsDigest is a short hash of the KV secrets of job name
// (secret/general/<name>/…), "" when it has none. The secrets are random
// tokens and passwords: 64 bits of their hash say nothing about them.
func secretsDigest(p *platform, name string) string {
	h := sha256.New()
	found := false
	for _, path := range slices.Sorted(maps.Keys(p.kv)) {
		if !strings.HasPrefix(path, "general/"+name+"/") {
			continue
		}
		found = true
		fields := p.kv[path]
		for _, k := range slices.Sorted(maps.Keys(fields)) {
			fmt.Fprintf(h, "%s\x00%s\x00%s\x00", path, k, fields[k])
		}
	}
	if !found {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// deleteRetired deletes the Consul and Nomad tokens a rotation retired
// (stages.RetiredTokenPrefix): the platform jobs run with the new ones now.
func deleteRetired(ctx context.Context, e *stages.Env, p *platform, pl *reconcile.Plan) error {
	list, _, err := p.nomad.ACLTokens().List((&nomadapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("nomad: list tokens: %w", err)
	}
	for _, t := range list {
		if !strings.HasPrefix(t.Name, stages.RetiredTokenPrefix) {
			continue
		}
		err := pl.Do(reconcile.Delete, "nomad token "+t.Name, "replaced by a rotation", func() error {
			_, err := p.nomad.ACLTokens().Delete(t.AccessorID, (&nomadapi.WriteOptions{}).WithContext(ctx))
			return err
		})
		if err != nil {
			return fmt.Errorf("nomad: %w", err)
		}
	}
	mgmt, _, err := e.Secrets.Get(stages.SecretConsulBootstrapToken)
	if err != nil {
		return err
	}
	c, err := cluster.ConsulAgent(e, p.inv.WithRole(inventory.RoleServer)[0], mgmt)
	if err != nil {
		return err
	}
	toks, _, err := c.ACL().TokenList((&consulapi.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("consul: list tokens: %w", err)
	}
	for _, t := range toks {
		if !strings.HasPrefix(t.Description, stages.RetiredTokenPrefix) {
			continue
		}
		err := pl.Do(reconcile.Delete, "consul token "+t.Description, "replaced by a rotation", func() error {
			_, err := c.ACL().TokenDelete(t.AccessorID, (&consulapi.WriteOptions{}).WithContext(ctx))
			return err
		})
		if err != nil {
			return fmt.Errorf("consul: %w", err)
		}
	}
	return nil
}

// rootCA returns the self-signed certificates of a CA file. The jobs trust
// the platform's roots only: the intermediate CAs under them can be
// rotated without changing a job (and restarting Fabio).
func rootCA(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var out []byte
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		if bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil {
			out = append(out, pem.EncodeToMemory(block)...)
		}
	}
	if len(out) == 0 {
		return "", fmt.Errorf("%s holds no root CA certificate", path)
	}
	return string(out), nil
}
