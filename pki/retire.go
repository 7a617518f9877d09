package pki

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
)

// A CA rotation (`bootstrap rotate ca`) leaves the old intermediate in its
// mount so that the certificates it issued still verify. The consul and
// nomad stages retire it once every agent serves a certificate of the new
// one.

// IntermediateMount is the state of a platform intermediate CA's mount.
type IntermediateMount struct {
	Name string
	// Root is the mount of the root CA that signed it.
	Root string
	// Current is the default issuer's certificate: the one that issues.
	Current *x509.Certificate
	// Old are what rotations left: issuers with a key that are not the
	// default, and keys no issuer uses.
	Old []OldIssuer
}

// OldIssuer is an issuer to retire and its key, or a key alone (IssuerID
// "") that a run killed while retiring left.
type OldIssuer struct{ IssuerID, KeyID string }

func (o OldIssuer) String() string {
	if o.IssuerID == "" {
		return "key " + o.KeyID
	}
	return "issuer " + o.IssuerID
}

// PlatformIntermediate reads the intermediate CA mount of ca (consul or
// nomad).
func PlatformIntermediate(ctx context.Context, c *api.Client, ca string) (IntermediateMount, error) {
	cfg := CA{Name: ca}
	mount := cfg.IntermediateMount(platformIntermediate)
	out := IntermediateMount{Name: mount, Root: cfg.RootMount()}
	r := &reconciler{c: c}
	if err := r.readMounts(ctx); err != nil {
		return out, err
	}
	def, err := r.defaultIssuer(ctx, mount)
	if err != nil {
		return out, err
	}
	pemCert, err := r.issuerCert(ctx, mount, def)
	if err != nil {
		return out, err
	}
	if out.Current, err = parseCert(pemCert); err != nil {
		return out, fmt.Errorf("default issuer of %s: %w", mount, err)
	}
	list, err := r.issuers(ctx, mount)
	if err != nil {
		return out, err
	}
	keys, err := r.keys(ctx, mount)
	if err != nil {
		return out, err
	}
	used := map[string]bool{}
	for _, is := range list {
		used[is.KeyID] = true
		if is.KeyID != "" && is.ID != def {
			out.Old = append(out.Old, OldIssuer{is.ID, is.KeyID})
		}
	}
	for id := range keys {
		if !used[id] {
			out.Old = append(out.Old, OldIssuer{"", id})
		}
	}
	return out, nil
}

// Retire revokes an old intermediate's certificate at its root (so it is
// on the root's CRL), then deletes the issuer and its key: nothing is
// issued by it again. Each step is a no-op when done before.
func (in IntermediateMount) Retire(ctx context.Context, c *api.Client, o OldIssuer) error {
	root := in.Root
	if o.IssuerID != "" {
		s, err := c.Logical().ReadWithContext(ctx, in.Name+"/issuer/"+o.IssuerID)
		if hasError(err, "unable to find PKI issuer") {
			s, err = nil, nil // deleted by a run killed before it deleted the key
		}
		if err != nil {
			return fmt.Errorf("read %s of %s: %w", o, in.Name, err)
		}
		if s != nil {
			cert, err := parseCert(str(s.Data, "certificate"))
			if err != nil {
				return fmt.Errorf("%s of %s: %w", o, in.Name, err)
			}
			if _, err := c.Logical().WriteWithContext(ctx, root+"/revoke", map[string]any{"serial_number": Serial(cert)}); err != nil {
				return fmt.Errorf("revoke %s of %s at %s: %w", o, in.Name, root, err)
			}
			crashpoint.Hit("pki/retire-after-revoke")
			if _, err := c.Logical().DeleteWithContext(ctx, in.Name+"/issuer/"+o.IssuerID); err != nil {
				return fmt.Errorf("delete %s of %s: %w", o, in.Name, err)
			}
		}
	}
	if _, err := c.Logical().DeleteWithContext(ctx, in.Name+"/key/"+o.KeyID); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete key %s of %s: %w", o.KeyID, in.Name, err)
	}
	return nil
}

// Serial is a certificate's serial number as Vault writes it.
func Serial(c *x509.Certificate) string {
	b := c.SerialNumber.Bytes()
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts, ":")
}
