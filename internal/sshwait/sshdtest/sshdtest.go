// Package sshdtest runs Debian's real sshd on a loopback address for tests:
// the SSH server a provisioned machine would have.
package sshdtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// Path is where Debian's openssh-server installs sshd.
const Path = "/usr/sbin/sshd"

// Need skips the test when sshd is missing (fails with
// BOOTSTRAP_REQUIRE_TOOLS=1) or with -short.
func Need(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts sshd; skipped with -short")
	}
	if _, err := os.Stat(Path); err != nil {
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

// User is the account the test logs in as: sshd run by someone other than
// root only lets that same user in.
func User(t testing.TB) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// FreePort returns a port that is free on ip right now.
func FreePort(t testing.TB, ip string) int {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// NewKey returns a new ed25519 key as a signer and as an OpenSSH PEM file.
func NewKey(t testing.TB) (ssh.Signer, []byte) {
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

// Server is one running sshd.
type Server struct {
	IP      string
	Port    int
	HostKey ssh.Signer

	cmd  *exec.Cmd
	out  *syncBuffer
	once sync.Once
}

// Start runs sshd on ip:port accepting client for any user, with the given
// host key (OpenSSH PEM), or a new one when hostKey is nil. It is stopped by
// pid when the test ends.
func Start(t testing.TB, ip string, port int, client ssh.PublicKey, hostKey []byte) *Server {
	t.Helper()
	dir := t.TempDir()
	if hostKey == nil {
		_, hostKey = NewKey(t)
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
	auth := write("authorized_keys", ssh.MarshalAuthorizedKey(client))
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
	out := &syncBuffer{}
	cmd := exec.Command(Path, "-D", "-e", "-f", conf)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &Server{IP: ip, Port: port, HostKey: hk, cmd: cmd, out: out}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd %s:%d:\n%s", ip, port, out)
		}
	})
	return s
}

// Stop kills sshd and waits for it.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	})
}

// KnownHostsLine is the line a trust-on-first-use client records for it.
func (s *Server) KnownHostsLine() string {
	return fmt.Sprintf("[%s]:%d %s", s.IP, s.Port, bytes.TrimSpace(ssh.MarshalAuthorizedKey(s.HostKey.PublicKey())))
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
