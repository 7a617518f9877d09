package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Names given to the keys and issuers bootstrap creates. Vault refuses a
// second key or issuer of the same name, which is what keeps a request still
// in flight from a killed run from ever adding a second root.
const (
	rootKeyName         = "root"
	rootIssuerName      = "root"
	intermediateKeyName = "intermediate"
)

func (r *reconciler) cas(ctx context.Context) error {
	for _, ca := range r.spec.AllCAs() {
		if err := r.ca(ctx, ca); err != nil {
			return err
		}
	}
	return nil
}

func (r *reconciler) ca(ctx context.Context, ca CA) error {
	root := ca.RootMount()
	if err := r.secretMount(ctx, root, "pki", ca.CommonName, ca.TTL, nil); err != nil {
		return err
	}
	if err := r.urls(ctx, root); err != nil {
		return err
	}
	if err := r.rootIssuer(ctx, ca); err != nil {
		return err
	}
	for _, in := range ca.Intermediates {
		mount := ca.IntermediateMount(in.Name)
		if err := r.secretMount(ctx, mount, "pki", in.CommonName, in.TTL, nil); err != nil {
			return err
		}
		if err := r.urls(ctx, mount); err != nil {
			return err
		}
		if err := r.intermediateIssuer(ctx, ca, in); err != nil {
			return err
		}
	}
	for _, role := range ca.Roles {
		if err := r.role(ctx, ca.RoleMount(role), role); err != nil {
			return err
		}
	}
	return nil
}

// urls sets the CRL and issuing-certificate URLs written into certificates.
func (r *reconciler) urls(ctx context.Context, mount string) error {
	base := strings.TrimSuffix(r.spec.Addr, "/") + "/v1/" + mount
	want := fields{
		"issuing_certificates":    []string{base + "/ca"},
		"crl_distribution_points": []string{base + "/crl"},
	}
	var got map[string]any
	if r.mounted(mount) {
		s, err := r.c.Logical().ReadWithContext(ctx, mount+"/config/urls")
		if err != nil {
			return fmt.Errorf("read %s/config/urls: %w", mount, err)
		}
		if s != nil {
			got = s.Data
		}
	}
	diffs := differences(got, want)
	if len(diffs) == 0 {
		return nil
	}
	return r.change("update", "vault pki urls "+mount, strings.Join(diffs, ", "), func() error {
		_, err := r.c.Logical().WriteWithContext(ctx, mount+"/config/urls", writeData(want))
		return err
	})
}

// issuer is one entry of a PKI mount's issuer list.
type issuer struct {
	ID    string
	Name  string
	KeyID string
}

func (r *reconciler) issuers(ctx context.Context, mount string) ([]issuer, error) {
	if !r.mounted(mount) {
		return nil, nil
	}
	s, err := r.c.Logical().ListWithContext(ctx, mount+"/issuers")
	if err != nil {
		return nil, fmt.Errorf("list issuers of %s: %w", mount, err)
	}
	if s == nil {
		return nil, nil
	}
	info, _ := s.Data["key_info"].(map[string]any)
	var out []issuer
	for _, id := range strs(s.Data, "keys") {
		m, _ := info[id].(map[string]any)
		out = append(out, issuer{ID: id, Name: str(m, "issuer_name"), KeyID: str(m, "key_id")})
	}
	return out, nil
}

func (r *reconciler) keys(ctx context.Context, mount string) (map[string]string, error) {
	if !r.mounted(mount) {
		return nil, nil
	}
	s, err := r.c.Logical().ListWithContext(ctx, mount+"/keys")
	if err != nil {
		return nil, fmt.Errorf("list keys of %s: %w", mount, err)
	}
	if s == nil {
		return nil, nil
	}
	info, _ := s.Data["key_info"].(map[string]any)
	out := map[string]string{} // key ID → name
	for _, id := range strs(s.Data, "keys") {
		m, _ := info[id].(map[string]any)
		out[id] = str(m, "key_name")
	}
	return out, nil
}

// issuerCert reads the PEM certificate of an issuer ("default" or an ID).
func (r *reconciler) issuerCert(ctx context.Context, mount, ref string) (string, error) {
	s, err := r.c.Logical().ReadWithContext(ctx, mount+"/issuer/"+ref)
	if err != nil {
		return "", fmt.Errorf("read issuer %s of %s: %w", ref, mount, err)
	}
	if s == nil {
		return "", fmt.Errorf("issuer %s of %s does not exist", ref, mount)
	}
	return strings.TrimSpace(str(s.Data, "certificate")), nil
}

func (r *reconciler) rootIssuer(ctx context.Context, ca CA) error {
	mount := ca.RootMount()
	target := "vault root CA " + mount
	list, err := r.issuers(ctx, mount)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		detail := fmt.Sprintf("CN=%s, %s, ttl %s", ca.CommonName, keyDesc(ca.KeyType, ca.KeyBits), fmtDuration(ca.TTL))
		return r.change("create", target, detail, func() error {
			_, err := r.c.Logical().WriteWithContext(ctx, mount+"/root/generate/internal", map[string]any{
				"common_name": ca.CommonName,
				"ttl":         seconds(ca.TTL),
				"key_type":    ca.KeyType,
				"key_bits":    ca.KeyBits,
				"issuer_name": rootIssuerName,
				"key_name":    rootKeyName,
			})
			// A request of a killed run that finished after all: the root
			// exists, which is what we want.
			if err != nil && !hasError(err, "already in use") {
				return err
			}
			crashpoint.Hit("pki/root-generated")
			pem, err := r.issuerCert(ctx, mount, rootIssuerName)
			if err != nil {
				return err
			}
			r.certs[mount] = pem
			return nil
		})
	}
	if len(list) > 1 {
		r.warnf("%s has %d issuers; bootstrap created one and leaves the others alone", mount, len(list))
	}
	pemCert, err := r.issuerCert(ctx, mount, "default")
	if err != nil {
		return err
	}
	r.certs[mount] = pemCert
	cert, err := parseCert(pemCert)
	if err != nil {
		return fmt.Errorf("root CA of %s: %w", mount, err)
	}
	r.checkCert(mount, cert, ca.CommonName, ca.KeyType, ca.KeyBits, ca.TTL)
	return nil
}

func (r *reconciler) intermediateIssuer(ctx context.Context, ca CA, in Intermediate) error {
	mount := ca.IntermediateMount(in.Name)
	root := ca.RootMount()
	target := "vault intermediate CA " + mount
	list, err := r.issuers(ctx, mount)
	if err != nil {
		return err
	}
	var current string
	for _, is := range list {
		if is.KeyID != "" && current == "" {
			current = is.ID // the root's certificate, imported with the chain, has no key
		}
	}
	if current == "" {
		detail := fmt.Sprintf("CN=%s, %s, signed by %s, ttl %s", in.CommonName, keyDesc(ca.KeyType, ca.KeyBits), root, fmtDuration(in.TTL))
		return r.change("create", target, detail, func() error {
			return r.signIntermediate(ctx, ca, in, intermediateKeyName)
		})
	}
	if note := r.e.Note(stages.RotateCANote(ca.Name)); note != "" {
		detail := "rotation: a new intermediate CA becomes the default; the old one is retired once every agent serves a certificate of the new one"
		err := r.change(reconcile.Replace, target, detail, func() error {
			if err := r.rotateIntermediate(ctx, ca, in, note); err != nil {
				return err
			}
			list, err = r.issuers(ctx, mount)
			return err
		})
		if err != nil {
			return err
		}
	}
	// After a rotation the mount holds several; the default one issues.
	if def, err := r.defaultIssuer(ctx, mount); err != nil {
		return err
	} else if slices.ContainsFunc(list, func(is issuer) bool { return is.ID == def && is.KeyID != "" }) {
		current = def
	}
	pemCert, err := r.issuerCert(ctx, mount, current)
	if err != nil {
		return err
	}
	r.certs[mount] = pemCert
	cert, err := parseCert(pemCert)
	if err != nil {
		return fmt.Errorf("intermediate CA of %s: %w", mount, err)
	}
	r.checkCert(mount, cert, in.CommonName, ca.KeyType, ca.KeyBits, in.TTL)
	if rootPEM := r.certs[root]; rootPEM != "" {
		rc, err := parseCert(rootPEM)
		if err == nil && cert.CheckSignatureFrom(rc) != nil {
			r.warnf("%s is not signed by the root of %s; bootstrap does not replace CAs: re-sign it by hand or remove both mounts to start over", mount, root)
		}
	}
	return nil
}

func (r *reconciler) defaultIssuer(ctx context.Context, mount string) (string, error) {
	s, err := r.c.Logical().ReadWithContext(ctx, mount+"/config/issuers")
	if err != nil {
		return "", fmt.Errorf("read the default issuer of %s: %w", mount, err)
	}
	if s == nil {
		return "", nil
	}
	return str(s.Data, "default"), nil
}

// rotateIntermediate makes a new intermediate CA in the mount, with a key
// of its own, and makes it the default issuer: certificates are issued by
// it from then on. The key's name, chosen once and kept in the note, finds
// the work of a killed run again. The old issuer stays, so what it issued
// still verifies, until the consul or nomad stage retires it
// (RetireIssuer).
func (r *reconciler) rotateIntermediate(ctx context.Context, ca CA, in Intermediate, keyName string) error {
	mount := ca.IntermediateMount(in.Name)
	note := stages.RotateCANote(ca.Name)
	if keyName == stages.RotateRequested {
		keyName = intermediateKeyName + "-" + time.Now().UTC().Format("20060102-150405")
		if err := r.e.SetNote(note, keyName); err != nil {
			return err
		}
	}
	find := func() (string, error) {
		keys, err := r.keys(ctx, mount)
		if err != nil {
			return "", err
		}
		list, err := r.issuers(ctx, mount)
		if err != nil {
			return "", err
		}
		for _, is := range list {
			if is.KeyID != "" && keys[is.KeyID] == keyName {
				return is.ID, nil
			}
		}
		return "", nil
	}
	id, err := find()
	if err != nil {
		return err
	}
	if id == "" {
		if err := r.signIntermediate(ctx, ca, in, keyName); err != nil {
			return err
		}
		if id, err = find(); err != nil {
			return err
		}
		if id == "" {
			return fmt.Errorf("%s: no issuer for the new key %s after signing it", mount, keyName)
		}
	}
	crashpoint.Hit("pki/rotate-before-default")
	if _, err := r.c.Logical().WriteWithContext(ctx, mount+"/config/issuers", map[string]any{"default": id}); err != nil {
		return fmt.Errorf("make %s the default issuer of %s: %w", id, mount, err)
	}
	return r.e.DeleteNotes(note)
}

// signIntermediate creates (or reuses) the intermediate's key, has the root
// sign a CSR for it and imports the signed certificate. Every step can be
// interrupted: a key left by a killed run is reused, never duplicated.
func (r *reconciler) signIntermediate(ctx context.Context, ca CA, in Intermediate, keyName string) error {
	mount := ca.IntermediateMount(in.Name)
	keys, err := r.keys(ctx, mount)
	if err != nil {
		return err
	}
	// The named key if a killed run made it; for the first intermediate,
	// otherwise any key someone left (the lowest ID, so every run picks the
	// same one). A rotation's key is new.
	var keyRef string
	for _, id := range slices.Sorted(maps.Keys(keys)) {
		if keys[id] == keyName || (keyRef == "" && keyName == intermediateKeyName) {
			keyRef = id
		}
	}
	csrReq := map[string]any{"common_name": in.CommonName}
	var csr string
	if keyRef == "" {
		csrReq["key_type"] = ca.KeyType
		csrReq["key_bits"] = ca.KeyBits
		csrReq["key_name"] = keyName
		s, err := r.c.Logical().WriteWithContext(ctx, mount+"/intermediate/generate/internal", csrReq)
		switch {
		case err == nil:
			csr = str(s.Data, "csr")
		case hasError(err, "already in use"):
			keyRef = keyName
		default:
			return fmt.Errorf("generate intermediate key: %w", err)
		}
	}
	if keyRef != "" {
		csrReq["key_ref"] = keyRef
		s, err := r.c.Logical().WriteWithContext(ctx, mount+"/intermediate/generate/existing", csrReq)
		if err != nil {
			return fmt.Errorf("create CSR for the existing intermediate key: %w", err)
		}
		csr = str(s.Data, "csr")
	}
	crashpoint.Hit("pki/intermediate-csr")
	signed, err := r.c.Logical().WriteWithContext(ctx, ca.RootMount()+"/root/sign-intermediate", map[string]any{
		"csr":         csr,
		"common_name": in.CommonName,
		"ttl":         seconds(in.TTL),
		"format":      "pem",
	})
	if err != nil {
		return fmt.Errorf("sign with %s: %w", ca.RootMount(), err)
	}
	cert := strings.TrimSpace(str(signed.Data, "certificate"))
	rootCert := strings.TrimSpace(str(signed.Data, "issuing_ca"))
	crashpoint.Hit("pki/intermediate-signed")
	// The root goes along so leaves' ca_chain reaches it.
	if _, err := r.c.Logical().WriteWithContext(ctx, mount+"/intermediate/set-signed", map[string]any{
		"certificate": cert + "\n" + rootCert + "\n",
	}); err != nil {
		return fmt.Errorf("import the signed certificate: %w", err)
	}
	r.certs[mount] = cert
	return nil
}

// checkCert warns when an existing CA differs from the configuration. A CA
// is never replaced: that would invalidate every certificate it issued.
func (r *reconciler) checkCert(mount string, c *x509.Certificate, cn, keyType string, keyBits int, ttl time.Duration) {
	var diffs []string
	if c.Subject.CommonName != cn {
		diffs = append(diffs, fmt.Sprintf("common name %q, configured %q", c.Subject.CommonName, cn))
	}
	if got := certKeyDesc(c); got != keyDesc(keyType, keyBits) {
		diffs = append(diffs, fmt.Sprintf("key %s, configured %s", got, keyDesc(keyType, keyBits)))
	}
	// Vault backdates NotBefore by 30s; a difference of more than a day is
	// a changed TTL, not rounding.
	if life := c.NotAfter.Sub(c.NotBefore); life-ttl > 24*time.Hour || ttl-life > 24*time.Hour {
		diffs = append(diffs, fmt.Sprintf("lifetime %s, configured %s", fmtDuration(life.Round(time.Hour)), fmtDuration(ttl)))
	}
	if len(diffs) > 0 {
		r.warnf("the CA in %s differs from the configuration (%s); bootstrap never replaces an existing CA: rotate it by hand, or change the configuration back", mount, strings.Join(diffs, "; "))
	}
}

func keyDesc(keyType string, bits int) string {
	if keyType == "ed25519" {
		return keyType
	}
	return fmt.Sprintf("%s %d", keyType, bits)
}

func certKeyDesc(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		return keyDesc("ec", k.Curve.Params().BitSize)
	case *rsa.PublicKey:
		return keyDesc("rsa", k.N.BitLen())
	case ed25519.PublicKey:
		return "ed25519"
	}
	return fmt.Sprintf("%T", c.PublicKey)
}

func parseCert(p string) (*x509.Certificate, error) {
	b, _ := pem.Decode([]byte(p))
	if b == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}
