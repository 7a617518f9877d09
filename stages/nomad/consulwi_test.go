package nomad

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"testing"
)

func TestJWKPEM(t *testing.T) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k := jwk{
		Kid: "k1", Kty: "RSA",
		N: base64.RawURLEncoding.EncodeToString(priv.N.Bytes()),
		E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(priv.E)).Bytes()),
	}
	s, err := k.pem()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "PUBLIC KEY" {
		t.Fatalf("not a PEM public key:\n%s", s)
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !priv.PublicKey.Equal(pub) {
		t.Error("the PEM key is not the JWK's key")
	}
	if _, err := (jwk{Kid: "bad", N: "!!", E: "AQAB"}).pem(); err == nil {
		t.Error("a key that is not base64url was accepted")
	}
}
