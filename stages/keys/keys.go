// Package keys is the first stage: the SSH key pair that reaches the
// machines and the gossip encryption keys of Consul and Nomad, generated once
// into the secret store and kept on every later run.
package keys

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/platform-bootstrap/bootstrap/stages"
)

// Stage generates the keys.
type Stage struct{}

// New returns the keys stage.
func New() *Stage { return &Stage{} }

// Name is "keys".
func (*Stage) Name() string { return "keys" }

type key struct {
	name string
	what string
	gen  func() (string, error)
}

// GossipKey returns a new gossip encryption key: 32 random bytes, base64.
func GossipKey() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

func (*Stage) keys() []key {
	return []key{
		{stages.SecretSSHKey, "ed25519 SSH key pair", nil},
		{stages.SecretConsulGossipKey, "Consul gossip encryption key", GossipKey},
		{stages.SecretNomadGossipKey, "Nomad gossip encryption key", GossipKey},
	}
}

// Plan lists the keys that do not exist yet.
func (s *Stage) Plan(_ context.Context, e *stages.Env) ([]stages.Change, error) {
	var out []stages.Change
	for _, k := range s.keys() {
		_, ok, err := e.Secrets.Get(k.name)
		if err != nil {
			return nil, err
		}
		if k.name == stages.SecretSSHKey {
			_, pubOK, err := e.Secrets.Get(stages.SecretSSHPublicKey)
			if err != nil {
				return nil, err
			}
			ok = ok && pubOK
		}
		if !ok {
			out = append(out, stages.Change{Action: "generate", Target: k.what, Detail: e.Secrets.Path(k.name)})
		}
	}
	return out, nil
}

// Apply generates the missing keys. Existing keys are never replaced.
func (s *Stage) Apply(_ context.Context, e *stages.Env) error {
	for _, k := range s.keys() {
		if k.name == stages.SecretSSHKey {
			if err := sshKeyPair(e); err != nil {
				return err
			}
			continue
		}
		if _, created, err := e.Secrets.GetOrCreate(k.name, k.gen); err != nil {
			return err
		} else if created {
			e.Step("generated %s", k.what)
		}
	}
	return nil
}

// sshKeyPair stores the private key first; the public key is derived from it,
// so a run killed between the two writes finishes on the next run with the
// same pair.
func sshKeyPair(e *stages.Env) error {
	priv, created, err := e.Secrets.GetOrCreate(stages.SecretSSHKey, func() (string, error) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return "", err
		}
		block, err := ssh.MarshalPrivateKey(k, "bootstrap")
		if err != nil {
			return "", err
		}
		return string(pem.EncodeToMemory(block)), nil
	})
	if err != nil {
		return err
	}
	if created {
		e.Step("generated ed25519 SSH key pair")
	}
	if _, ok, err := e.Secrets.Get(stages.SecretSSHPublicKey); err != nil || ok {
		return err
	}
	signer, err := ssh.ParsePrivateKey([]byte(priv))
	if err != nil {
		return fmt.Errorf("stored SSH key %s: %w", e.Secrets.Path(stages.SecretSSHKey), err)
	}
	pub := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " bootstrap\n"
	return e.Secrets.Put(stages.SecretSSHPublicKey, pub)
}
