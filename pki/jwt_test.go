package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// jwtSigner makes ES256 tokens shaped like Nomad's workload identities.
type jwtSigner struct{ key *ecdsa.PrivateKey }

func newJWTSigner(t *testing.T) *jwtSigner {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &jwtSigner{key: k}
}

func (s *jwtSigner) publicPEM(t *testing.T) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func (s *jwtSigner) sign(t *testing.T, namespace, job string) string {
	t.Helper()
	now := time.Now().Unix()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	msg := enc(map[string]any{"alg": "ES256", "typ": "JWT"}) + "." + enc(map[string]any{
		"aud": "vault.io", "sub": "global:" + namespace + ":" + job + ":web:default",
		"iat": now, "nbf": now, "exp": now + 300,
		"nomad_namespace": namespace, "nomad_job_id": job, "nomad_task": "web",
	})
	h := sha256.Sum256([]byte(msg))
	r, ss, err := ecdsa.Sign(rand.Reader, s.key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return msg + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// checkNomadWorkloads configures auth/jwt-nomad the way the nomad stage will
// (with a local key instead of Nomad's JWKS URL) and logs in as jobs: each
// reads its own secrets only, and never bootstrap's tokens, even a job named
// "vault" in a namespace named "bootstrap".
func checkNomadWorkloads(t *testing.T, h *harness, admin *api.Client) {
	signer := newJWTSigner(t)
	if _, err := admin.Logical().Write("auth/"+JWTNomadPath+"/config", map[string]any{
		"jwt_validation_pubkeys": []string{signer.publicPEM(t)},
		"default_role":           "nomad-workloads",
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Logical().Write("auth/"+JWTNomadPath+"/role/nomad-workloads", map[string]any{
		"role_type":               "jwt",
		"bound_audiences":         []string{"vault.io"},
		"user_claim":              "/nomad_job_id",
		"user_claim_json_pointer": true,
		"claim_mappings":          map[string]string{"nomad_namespace": "nomad_namespace", "nomad_job_id": "nomad_job_id", "nomad_task": "nomad_task"},
		"token_type":              "service",
		"token_policies":          []string{PolicyNomadWorkloads},
		"token_period":            "30m",
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"dev/web/db", "dev/api/db"} {
		if _, err := admin.Logical().Write(KVMount+"/data/"+p, map[string]any{"data": map[string]any{"password": "p"}}); err != nil {
			t.Fatal(err)
		}
	}
	login := func(ns, job string) *api.Client {
		s, err := h.tokenClient("").Logical().Write("auth/"+JWTNomadPath+"/login", map[string]any{"jwt": signer.sign(t, ns, job), "role": "nomad-workloads"})
		if err != nil {
			t.Fatalf("jwt login as %s/%s: %v", ns, job, err)
		}
		return h.tokenClient(s.Auth.ClientToken)
	}
	web := login("dev", "web")
	if _, err := web.Logical().Read(KVMount + "/data/dev/web/db"); err != nil {
		t.Errorf("job dev/web cannot read its own secret: %v", err)
	}
	if _, err := web.Logical().Read(KVMount + "/data/dev/api/db"); !isDenied(err) {
		t.Errorf("job dev/web read dev/api's secret: %v", err)
	}
	evil := login(KVPrefix, "vault")
	if _, err := evil.Logical().Read(KVPath("vault/tokens/consul-template-server")); !isDenied(err) {
		t.Errorf("a job named vault in namespace %s read bootstrap's token: %v", KVPrefix, err)
	}
}
