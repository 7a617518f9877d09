package sshwait

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
)

// These tests run Debian's real sshd on loopback addresses.

const sshdPath = "/usr/sbin/sshd"

func needSSHD(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts sshd; skipped with -short")
	}
	if _, err := os.Stat(sshdPath); err != nil {
		if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
			t.Fatal("sshd is missing (BOOTSTRAP_REQUIRE_TOOLS=1); apt-get install openssh-server")
		}
		t.Skip("sshd is missing; apt-get install openssh-server (make tools does)")
	}
	// sshd started by root insists on its privilege separation directory,
	// which the openssh-server package normally creates at boot
	// (tmpfiles.d); containers often lack it.
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func randomIP(t *testing.T) string {
	n, err := rand.Int(rand.Reader, big.NewInt(250*250))
	if err != nil {
		t.Fatal(err)
	}
	v := n.Int64()
	return fmt.Sprintf("127.%d.%d.%d", v/250+3, v%250+1, 7)
}

// freePort finds a port sshd can listen on at ip.
func freePort(t *testing.T, ip string) int {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func newKey(t *testing.T) (ssh.Signer, []byte) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, pem.EncodeToMemory(block)
}

type sshd struct {
	ip      string
	port    int
	dir     string
	hostKey ssh.Signer
	cmd     *exec.Cmd
	out     *bytes.Buffer
}

// startSSHD runs sshd on ip:port, accepting the client key for the
// current user, with a new host key unless one is given.
func startSSHD(t *testing.T, ip string, port int, client ssh.Signer, hostKey []byte) *sshd {
	t.Helper()
	dir := t.TempDir()
	if hostKey == nil {
		_, hostKey = newKey(t)
	}
	hk, err := ssh.ParsePrivateKey(hostKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hostKeyFile := write("host_key", hostKey)
	auth := write("authorized_keys", ssh.MarshalAuthorizedKey(client.PublicKey()))
	conf := write("sshd_config", fmt.Appendf(nil, `ListenAddress %s:%d
HostKey %s
AuthorizedKeysFile %s
PidFile none
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel VERBOSE
`, ip, port, hostKeyFile, auth))
	out := &bytes.Buffer{}
	cmd := exec.Command(sshdPath, "-D", "-e", "-f", conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sshd{ip: ip, port: port, dir: dir, hostKey: hk, cmd: cmd, out: out}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("sshd %s:%d:\n%s", ip, port, out)
		}
	})
	return s
}

func (s *sshd) stop() {
	if s.cmd.ProcessState == nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
}

func currentUser(t *testing.T) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

func node(name, ip string, port int, user string) inventory.Node {
	return inventory.Node{Name: name, Roles: []string{"server"}, PrivateIP: ip, SSH: inventory.SSH{User: user, Port: port}}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestWaitTrustsOnFirstUseAndRecordsHostKeys(t *testing.T) {
	needSSHD(t)
	client, _ := newKey(t)
	me := currentUser(t)
	var nodes []inventory.Node
	var servers []*sshd
	for i := range 2 {
		ip := randomIP(t)
		s := startSSHD(t, ip, freePort(t, ip), client, nil)
		servers = append(servers, s)
		nodes = append(nodes, node(fmt.Sprintf("server-%d", i+1), ip, s.port, me))
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
		want := fmt.Sprintf("[%s]:%d %s", s.ip, s.port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.hostKey.PublicKey()))))
		if !strings.Contains(string(b), want) {
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
	needSSHD(t)
	client, _ := newKey(t)
	ip := randomIP(t)
	port := freePort(t, ip)
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
		done <- Wait(ctxFor(t), []inventory.Node{node("client-1", ip, port, currentUser(t))},
			Options{KnownHosts: kh, Signer: client, Timeout: time.Minute, Interval: 100 * time.Millisecond, Log: logw})
	}()
	select {
	case <-failed:
	case err := <-done:
		t.Fatalf("Wait returned before sshd started: %v", err)
	}
	startSSHD(t, ip, port, client, nil)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type writerFunc func(p []byte)

func (f writerFunc) Write(p []byte) (int, error) { f(p); return len(p), nil }

func TestWaitRefusesAChangedHostKey(t *testing.T) {
	needSSHD(t)
	client, _ := newKey(t)
	ip := randomIP(t)
	port := freePort(t, ip)
	kh := filepath.Join(t.TempDir(), "known_hosts")
	nodes := []inventory.Node{node("server-1", ip, port, currentUser(t))}
	opts := Options{KnownHosts: kh, Signer: client, Timeout: time.Minute, Interval: 100 * time.Millisecond}

	first := startSSHD(t, ip, port, client, nil)
	if err := Wait(ctxFor(t), nodes, opts); err != nil {
		t.Fatal(err)
	}
	recorded, _ := os.ReadFile(kh)
	first.stop()

	// The same address now answers with another host key.
	second := startSSHD(t, ip, port, client, nil)
	err := Wait(ctxFor(t), nodes, opts)
	if err == nil {
		t.Fatal("Wait accepted a changed host key")
	}
	t.Log(err)
	for _, want := range []string{"node server-1", fmt.Sprintf("%s:%d", ip, port), "host key changed", kh, ssh.FingerprintSHA256(second.hostKey.PublicKey())} {
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
	needSSHD(t)
	client, _ := newKey(t)
	me := currentUser(t)
	ip := randomIP(t)
	up := startSSHD(t, ip, freePort(t, ip), client, nil)
	deadIP := randomIP(t)
	deadPort := freePort(t, deadIP)
	nodes := []inventory.Node{node("server-1", ip, up.port, me), node("client-1", deadIP, deadPort, me)}
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
	needSSHD(t)
	client, _ := newKey(t)
	stranger, strangerPEM := newKey(t)
	_ = stranger
	ip := randomIP(t)
	s := startSSHD(t, ip, freePort(t, ip), client, nil)
	// The inventory's private_key_file wins over the default signer, and
	// here it is a key the node does not accept.
	keyFile := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(keyFile, strangerPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	n := node("server-1", ip, s.port, currentUser(t))
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
