package provision_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
	"github.com/platform-bootstrap/bootstrap/internal/sshwait/sshdtest"
)

// TestStaticOverSSH drives the real-machine path: a static inventory of
// machines reached over SSH (real sshd on loopback, the keys stage's key),
// Ansible with connection ssh rather than local, binaries copied to the
// machines, and services run as processes (no systemd here). Vault, its
// PKI and Consul come up that way; down tears the services down over SSH.
func TestStaticOverSSH(t *testing.T) {
	sshdtest.Need(t)
	p := platformtest.Prepare(t)
	machines := filepath.Join(p.Dir, "machines")
	user := sshdtest.User(t)
	ips := []string{p.Subnet.IP(1), p.Subnet.IP(2)}
	ports := []int{sshdtest.FreePort(t, ips[0]), sshdtest.FreePort(t, ips[1])}
	p.WriteConfig(fmt.Sprintf(`provider "static" {
  service_manager = "process"
  install_method  = "binary"
  bin_dir         = %q
  node_root       = %q

  node "server-1" {
    roles      = ["server", "vault"]
    private_ip = %q
    ssh {
      user = %q
      port = %d
    }
  }
  node "client-1" {
    roles      = ["client"]
    private_ip = %q
    ssh {
      user = %q
      port = %d
    }
  }
}
vault {
  key_shares    = 1
  key_threshold = 1
}
`, platformtest.BinDir(), machines, ips[0], user, ports[0], ips[1], user, ports[1]))

	p.Up("--only", "keys")
	pub, err := os.ReadFile(filepath.Join(p.StateDir(), "secrets", "ssh", "id_ed25519.pub"))
	if err != nil {
		t.Fatal(err)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ips {
		sshdtest.Start(t, ips[i], ports[i], key, nil)
	}

	p.Up("--only", "provision,vault,pki,consul")

	// Host keys were recorded on first contact.
	kh, err := os.ReadFile(filepath.Join(p.StateDir(), "ssh", "known_hosts"))
	if err != nil || strings.Count(string(kh), "\n") < 2 {
		t.Errorf("known_hosts should hold both machines' host keys: %v\n%s", err, kh)
	}
	// Ansible reached the machines over SSH: the binaries were copied into
	// the machines' own directories and run from there.
	for _, n := range []string{"server-1", "client-1"} {
		if _, err := os.Stat(filepath.Join(machines, n, "bin", "consul")); err != nil {
			t.Errorf("consul was not copied to %s: %v", n, err)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(p.StateDir(), "logs", "*-up.log"))
	sawSSH := false
	for _, l := range logs {
		if b, _ := os.ReadFile(l); strings.Contains(string(b), "Copy the binary to the machine for vault") {
			sawSSH = true
		}
	}
	if !sawSSH {
		t.Error("the run logs show no copy of the binaries: Ansible did not take the SSH path")
	}

	// Vault answers over TLS, initialised and unsealed.
	ca, _ := os.ReadFile(filepath.Join(p.StateDir(), "tls", "vault", "ca.pem"))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get("https://" + ips[0] + ":8200/v1/sys/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("vault health over the SSH-installed node: %d", resp.StatusCode)
	}
	if r := p.Run([]string{"plan", "--only", "provision,vault,pki,consul"}); r.Code != 0 {
		t.Errorf("plan after up: exit %d\n%s", r.Code, r.Output())
	}
	r := p.Run([]string{"status"})
	if !strings.Contains(r.Stdout, "client-1  client") {
		t.Errorf("status should show the consul client:\n%s", r.Stdout)
	}

	// Down stops the services over SSH before sshd goes away.
	if r := p.Run([]string{"down", "--auto-approve"}); r.Code != 0 {
		t.Fatalf("down: exit %d\n%s", r.Code, r.Output())
	}
	if pids, _ := proc.Under(machines); len(pids) > 0 {
		t.Errorf("processes left on the machines after down: %v", pids)
	}
	if _, err := os.Stat(filepath.Join(machines, "server-1")); err == nil {
		t.Error("the node's directory is left after down")
	}
	p.AssertNoSecrets()
}
