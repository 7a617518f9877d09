package archive

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

func write(t *testing.T, k Keys, entries []Entry) []byte {
	t.Helper()
	to, err := k.EncryptTo()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Write(&buf, to, Manifest{Created: time.Now().UTC(), Datacenter: "dc1"}, entries); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func read(k Keys, b []byte) (*Manifest, []Entry, error) {
	ids, err := k.DecryptWith()
	if err != nil {
		return nil, nil, err
	}
	return Read(bytes.NewReader(b), ids)
}

var sample = []Entry{{"vault.snap", []byte("raft data")}, {"state/secrets/consul/gossip-key", []byte("c2VjcmV0IGdvc3NpcA==")}}

func TestRoundTrip(t *testing.T) {
	pass := Keys{Passphrase: "correct horse battery staple"}
	b := write(t, pass, sample)
	if bytes.Contains(b, []byte("c2VjcmV0IGdvc3NpcA==")) || bytes.Contains(b, []byte("raft data")) {
		t.Fatal("the archive holds a file in clear text")
	}
	m, got, err := read(pass, b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Datacenter != "dc1" || len(m.Files) != 2 || m.Files[0].Name != "vault.snap" || len(m.Files[0].SHA256) != 64 {
		t.Fatalf("manifest: %+v", m)
	}
	if d, ok := Get(got, "state/secrets/consul/gossip-key"); !ok || string(d) != "c2VjcmV0IGdvc3NpcA==" {
		t.Fatalf("entries: %+v", got)
	}
}

func TestRecipientAndIdentity(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "key.txt")
	if err := os.WriteFile(file, []byte("# test key\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := write(t, Keys{Recipients: []string{id.Recipient().String()}}, sample)
	if _, _, err := read(Keys{IdentityFile: file}, b); err != nil {
		t.Fatal(err)
	}
	other, _ := age.GenerateX25519Identity()
	if err := os.WriteFile(file, []byte(other.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = read(Keys{IdentityFile: file}, b)
	wantBad(t, err, "wrong passphrase or identity")
}

func wantBad(t *testing.T, err error, msg string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || !strings.Contains(err.Error(), msg) {
		t.Fatalf("err = %v, want an archive error containing %q", err, msg)
	}
}

func TestRefused(t *testing.T) {
	pass := Keys{Passphrase: "correct horse battery staple"}
	b := write(t, pass, sample)

	_, _, err := read(Keys{Passphrase: "wrong"}, b)
	wantBad(t, err, "wrong passphrase or identity")

	for _, at := range []int{len(b) / 2, len(b) - 5} {
		c := bytes.Clone(b)
		c[at] ^= 0x40
		_, _, err = read(pass, c)
		wantBad(t, err, "damaged")
	}
	_, _, err = read(pass, b[:len(b)-20])
	wantBad(t, err, "damaged")

	_, _, err = read(pass, []byte("PK\x03\x04 a zip file"))
	wantBad(t, err, "not a bootstrap backup")
}

func TestManifestMismatch(t *testing.T) {
	m := &Manifest{Files: []File{{Name: "a", Size: 1, SHA256: strings.Repeat("0", 64)}}}
	wantBad(t, m.check([]Entry{{"a", []byte("x")}}), "does not match")
	wantBad(t, m.check(nil), "lists 1")
	wantBad(t, (&Manifest{Files: []File{{Name: "../x"}}}).check([]Entry{{"../x", nil}}), "clean relative path")
}

func TestKeys(t *testing.T) {
	if _, err := (Keys{}).EncryptTo(); err == nil {
		t.Fatal("no key accepted")
	}
	if _, err := (Keys{Passphrase: "p", Recipients: []string{"age1x"}}).EncryptTo(); err == nil {
		t.Fatal("passphrase and recipient accepted together")
	}
	if _, err := (Keys{Recipients: []string{"not-a-key"}}).EncryptTo(); err == nil || !strings.Contains(err.Error(), "not-a-key") {
		t.Fatalf("bad recipient: %v", err)
	}
}
