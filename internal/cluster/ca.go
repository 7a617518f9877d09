package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/apitls"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/pki"
)

// CAHash is a short hash of a CA file. The consul and nomad stages give it
// to consul-template's configuration: a new intermediate CA changes it, and
// the restarted consul-template issues every agent a certificate from the
// new CA at once instead of at its next renewal.
func CAHash(caFile string) (string, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

// RetireOldCAs retires what CA rotations left in the intermediate mount of
// ca (see pki.IntermediateMount.Retire), once every agent in addrs (node
// name → host:port of its HTTPS API) serves a certificate of the current
// intermediate CA.
func RetireOldCAs(ctx context.Context, p *reconcile.Plan, vc *vaultapi.Client, ca, caFile string, addrs map[string]string) error {
	in, err := pki.PlatformIntermediate(ctx, vc, ca)
	if err != nil || len(in.Old) == 0 {
		return err
	}
	waited := false
	for _, o := range in.Old {
		err := p.Do(reconcile.Delete, "vault "+o.String()+" of "+in.Name, "retired by a CA rotation, once every "+ca+" agent serves a certificate of the new CA", func() error {
			if !waited {
				if err := waitServing(ctx, in, caFile, addrs); err != nil {
					return err
				}
				waited = true
			}
			return in.Retire(ctx, vc, o)
		})
		if err != nil {
			return fmt.Errorf("%s: %w", ca, err)
		}
	}
	return nil
}

// waitServing waits until every agent serves a certificate issued by the
// mount's current CA.
func waitServing(ctx context.Context, in pki.IntermediateMount, caFile string, addrs map[string]string) error {
	tc, err := apitls.Config(caFile, "")
	if err != nil {
		return err
	}
	var old []string
	err = poll.Until(ctx, 2*time.Minute, time.Second, func() (bool, error) {
		old = old[:0]
		for name, addr := range addrs {
			if !servesCurrent(ctx, addr, tc, in) {
				old = append(old, name)
			}
		}
		return len(old) == 0, nil
	})
	if err != nil {
		slices.Sort(old)
		return fmt.Errorf("%s still serve a certificate of the old CA (their consul-template issues from the new one when it restarts): %w", strings.Join(old, ", "), err)
	}
	return nil
}

func servesCurrent(ctx context.Context, addr string, tc *tls.Config, in pki.IntermediateMount) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: tc}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	return len(certs) > 0 && bytes.Equal(certs[0].AuthorityKeyId, in.Current.SubjectKeyId)
}
