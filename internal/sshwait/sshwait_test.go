package sshwait

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/sshwait/sshdtest"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
)

// These tests run Debian's real sshd on loopback addresses.

func randomIP(t *testing.T) string { return testcluster.NewSubnet(t).IP(7) }

func node(name, ip string, port int, user string) inventory.Node {
	return inventory.Node{Name: name, Roles: []string{"server"}, PrivateIP: ip, SSH: inventory.SSH{User: user, Port: port}}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestWaitTrustsOnFirstUseAndRecordsHostKeys(t *testing.T) {
	sshdtest.Need(t)
	client, _ := sshdtest.NewKey(t)
	me := sshdtest.User(t)
	var nodes []inventory.Node
	var servers []*sshdtest.Server
	for i := range 2 {
		ip := randomIP(t)
		s := sshdtest.Start(t, ip, sshdtest.FreePort(t, ip), client.PublicKey(), nil)
		servers = append(servers, s)
		nodes = append(nodes, node(fmt.Sprintf("server-%d", i+1), ip, s.Port, me))
	}
	kh := filepath.Join(t.TempDir(), "known_hosts")
	log := &bytes.Buffer{}
	opts := Options{KnownHosts: kh, Signer: client, Timeout: time.Minute, Interval: 200 * time.Millisecond, Log: log}
	if err := Wait(ctxFor(t), nodes, opts); err != nil {
		t.Fatal(err)
	}
	t.Log(log)

	b, err := os.ReadFile(kh)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("known_hosts has %d lines, want 2:\n%s", len(lines), b)
	}
	for _, s := range servers {
		if want := s.KnownHostsLine(); !strings.Contains(string(b), want) {
			t.Errorf("known_hosts lacks %q:\n%s", want, b)
		}
	}
	if fi, _ := os.Stat(kh); fi.Mode().Perm() != 0o600 {
		t.Errorf("known_hosts mode %v", fi.Mode().Perm())
	}

	// Once recorded, the keys are trusted and nothing is written.
	before, _ := os.Stat(kh)
	if err := Wait(ctxFor(t), nodes, opts); err != nil {
		t.Fatal(err)
	}
	after, _ := os.Stat(kh)
	b2, _ := os.ReadFile(kh)
	if !bytes.Equal(b, b2) || !before.ModTime().Equal(after.ModTime()) {
		t.Fatal("second wait rewrote known_hosts")
	}
}

func TestWaitRetriesUntilSSHAnswers(t *testing.T) {
	sshdtest.Need(t)
	client, _ := sshdtest.NewKey(t)
	ip := randomIP(t)
	port := sshdtest.FreePort(t, ip)
	kh := filepath.Join(t.TempDir(), "known_hosts")

	// sshd starts only after the first attempt has failed, as on a machine
	// that is still booting.
	failed := make(chan struct{})
	var once sync.Once
	logw := writerFunc(func(p []byte) {
		if strings.Contains(string(p), "attempt 1:") {
			once.Do(func() { close(failed) })
		}
	})
	done := make(chan error, 1)
	go func() {
		done <- Wait(ctxFor(t), []inventory.Node{node("client-1", ip, port, sshdtest.User(t))},
			Options{KnownHosts: kh, Signer: client, Timeout: time.Minute, Interval: 100 * time.Millisecond, Log: logw})
	}()
	select {
	case <-failed:
	case err := <-done:
		t.Fatalf("Wait returned before sshd started: %v", err)
	}
	sshdtest.Start(t, ip, port, client.PublicKey(), nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

func TestWaitRefusesAChangedHostKey(t *testing.T) {
	sshdtest.Need(t)
	client, _ := sshdtest.NewKey(t)
	ip := randomIP(t)
	port := sshdtest.FreePort(t, ip)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	nodes := []inventory.Node{node("server-1", ip, port, sshdtest.User(t))}
	opts := Options{KnownHosts: kh, Signer: client, Timeout: time.Minute, Interval: 100 * time.Millisecond}

	first := sshdtest.Start(t, ip, port, client.PublicKey(), nil)
	if err := Wait(ctxFor(t), nodes, opts); err != nil {
		t.Fatal(err)
	}
	recorded, _ := os.ReadFile(kh)
	first.Stop()

	// The same address now answers with another host key.
	second := sshdtest.Start(t, ip, port, client.PublicKey(), nil)
	err := Wait(ctxFor(t), nodes, opts)
	if err == nil {
		t.Fatal("Wait accepted a changed host key")
	}
	t.Log(err)
	for _, want := range []string{"node server-1", fmt.Sprintf("%s:%d", ip, port), "host key changed", kh, ssh.FingerprintSHA256(second.HostKey.PublicKey())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q", want)
		}
	}
	if strings.Contains(err.Error(), "did not answer") {
		t.Error("a changed host key was retried until the timeout")
	}
	now, _ := os.ReadFile(kh)
	if !bytes.Equal(recorded, now) {
		t.Error("the changed key was recorded")
	}
}

func TestWaitNamesTheNodeThatNeverAnswered(t *testing.T) {
	sshdtest.Need(t)
	client, _ := sshdtest.NewKey(t)
	me := sshdtest.User(t)
	ip := randomIP(t)
	up := sshdtest.Start(t, ip, sshdtest.FreePort(t, ip), client.PublicKey(), nil)
	deadIP := randomIP(t)
	deadPort := sshdtest.FreePort(t, deadIP)
	nodes := []inventory.Node{node("server-1", ip, up.Port, me), node("client-1", deadIP, deadPort, me)}
	err := Wait(ctxFor(t), nodes, Options{KnownHosts: filepath.Join(t.TempDir(), "kh"), Signer: client, Timeout: 2 * time.Second, Interval: 200 * time.Millisecond})
	if err == nil {
		t.Fatal("Wait succeeded with a node that has no SSH server")
	}
	t.Log(err)
	if !strings.Contains(err.Error(), fmt.Sprintf("node client-1 (%s:%d) did not answer SSH", deadIP, deadPort)) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("unclear error: %v", err)
	}
	if strings.Contains(err.Error(), "server-1") {
		t.Errorf("the node that answered is blamed: %v", err)
	}
}

func TestWaitNeedsTheRightKey(t *testing.T) {
	sshdtest.Need(t)
	client, _ := sshdtest.NewKey(t)
	stranger, strangerPEM := sshdtest.NewKey(t)
	_ = stranger
	ip := randomIP(t)
	s := sshdtest.Start(t, ip, sshdtest.FreePort(t, ip), client.PublicKey(), nil)
	// The inventory's private_key_file wins over the default signer, and
	// here it is a key the node does not accept.
	keyFile := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(keyFile, strangerPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	n := node("server-1", ip, s.Port, sshdtest.User(t))
	n.SSH.PrivateKeyFile = keyFile
	err := Wait(ctxFor(t), []inventory.Node{n}, Options{KnownHosts: filepath.Join(t.TempDir(), "kh"), Signer: client, Timeout: 2 * time.Second, Interval: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
		t.Fatalf("login with a key the node does not accept: %v", err)
	}
}

func TestWaitChecksItsInput(t *testing.T) {
	n := node("server-1", "127.0.0.1", 22, "root")
	if err := Wait(context.Background(), []inventory.Node{n}, Options{KnownHosts: "kh"}); err == nil || !strings.Contains(err.Error(), "node server-1: no SSH key") {
		t.Errorf("no key: %v", err)
	}
	n.SSH.PrivateKeyFile = filepath.Join(t.TempDir(), "missing")
	if err := Wait(context.Background(), []inventory.Node{n}, Options{KnownHosts: "kh"}); err == nil || !strings.Contains(err.Error(), "node server-1: read SSH key") {
		t.Errorf("missing key file: %v", err)
	}
	if err := Wait(context.Background(), nil, Options{}); err == nil {
		t.Error("no known_hosts file accepted")
	}
	if got := Address(inventory.Node{PublicIP: "203.0.113.7", PrivateIP: "10.0.0.2", SSH: inventory.SSH{Port: 2222}}); got != "203.0.113.7:2222" {
		t.Errorf("Address = %s", got)
	}
	if got := Address(inventory.Node{PrivateIP: "10.0.0.2"}); got != "10.0.0.2:22" {
		t.Errorf("Address = %s", got)
	}
}
