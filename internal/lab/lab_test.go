package lab_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/platform-bootstrap/bootstrap/internal/lab"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
)

// need skips when the lab cannot run here (fails with
// BOOTSTRAP_REQUIRE_TOOLS=1) or with -short.
func need(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("boots systemd-nspawn machines; skipped with -short")
	}
	if err := lab.Available(); err != nil {
		if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
			t.Fatalf("the machine lab cannot run (BOOTSTRAP_REQUIRE_TOOLS=1): %v", err)
		}
		t.Skipf("the machine lab cannot run: %v", err)
	}
}

// sshRun runs cmd on the machine as root with the lab's key.
func sshRun(t *testing.T, st *lab.State, m lab.Machine, cmd string) (string, error) {
	t.Helper()
	b, err := os.ReadFile(st.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", net.JoinHostPort(m.IP, "22"), &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // fresh machines; the test trusts its own bridge
		Timeout:         10 * time.Second,
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return strings.TrimSpace(string(out)), err
}

// outsideBanner reads the first bytes of the sshd at ip:22 from the lab's
// outside network namespace.
func outsideBanner(ctx context.Context, st *lab.State, ip string) (string, error) {
	out, err := st.Outside(ctx, "timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/"+ip+"/22 && head -c 7 <&3")
	return strings.TrimSpace(string(out)), err
}

// checkOutside proves what a user on the Internet reaches: the client's
// public address, and not its private one, a server's, or the host's.
func checkOutside(t *testing.T, st *lab.State, client, server lab.Machine) {
	t.Helper()
	ctx := context.Background()
	if out, err := outsideBanner(ctx, st, client.PublicIP); err != nil || out != "SSH-2.0" {
		t.Errorf("outside cannot reach %s's sshd on its public address %s: %v %q", client.Name, client.PublicIP, err, out)
	}
	hostIP, _, _ := strings.Cut(st.HostCIDR, "/")
	for _, ip := range []string{client.IP, server.IP, hostIP} {
		if out, err := outsideBanner(ctx, st, ip); err == nil {
			t.Errorf("outside reaches %s:22 (%q), which is private", ip, out)
		}
	}
}

// outsideGetHost serves HTTP on the host at ip (which says hello to the
// client's address) and GETs it from the outside network namespace.
func outsideGetHost(t *testing.T, st *lab.State, ip string) ([]byte, error) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.RemoteAddr)
	})}
	go srv.Serve(l)
	defer srv.Close()
	return st.OutsideGet(context.Background(), "http://"+l.Addr().String()+"/")
}

// TestLab boots two machines, checks that each is its own machine reached
// over SSH, that the client's public address, and only it, is reached from
// outside, reboots the client from inside, and checks that Down leaves
// nothing behind on the host, even for a machine whose supervisor was
// killed.
func TestLab(t *testing.T) {
	need(t)
	dir := t.TempDir()
	ctx := context.Background()
	t.Cleanup(func() {
		if err := lab.Down(context.Background(), dir); err != nil {
			t.Errorf("cleanup: lab down: %v", err)
		}
	})
	start := time.Now()
	st, err := lab.Up(ctx, lab.Config{Dir: dir, Name: "lt", Net: 201, Nodes: lab.Nodes(1, 1), DataVolumes: []string{"client-1"}, Public: true, Owner: os.Getpid(), Log: testLog{t}})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Logf("lab up (2 machines, rootfs cached or built): %s", time.Since(start).Round(time.Millisecond))

	ids := map[string]bool{}
	for _, m := range st.Machines {
		out, err := sshRun(t, st, m, "hostname; systemctl is-system-running; ip -4 -o addr show dev host0; cat /etc/machine-id; cat /proc/self/cgroup | grep name=systemd")
		if err != nil {
			t.Fatalf("ssh %s: %v\n%s", m.Name, err, out)
		}
		lines := strings.Split(out, "\n")
		if len(lines) < 4 {
			t.Fatalf("%s: short output:\n%s", m.Name, out)
		}
		if lines[0] != m.Name {
			t.Errorf("%s: hostname %q", m.Name, lines[0])
		}
		if lines[1] != "running" {
			t.Errorf("%s: systemd is %q, want running", m.Name, lines[1])
		}
		if !strings.Contains(lines[2], " "+m.IP+"/24 ") {
			t.Errorf("%s: host0 should have %s: %s", m.Name, m.IP, lines[2])
		}
		if ids[lines[3]] {
			t.Errorf("%s: machine-id %s is shared", m.Name, lines[3])
		}
		ids[lines[3]] = true
	}
	// Each machine runs in its own cgroup on the host.
	for _, m := range st.Machines {
		init, err := lab.Init(m)
		if err != nil {
			t.Fatal(err)
		}
		cg, _ := os.ReadFile("/proc/" + strconv.Itoa(init) + "/cgroup")
		if !strings.Contains(string(cg), "/bootstrap-lab/"+m.Unit+"/") {
			t.Errorf("%s: init (pid %d) is not in the machine's own cgroup:\n%s", m.Name, init, cg)
		}
	}
	// Its own cgroups are writable inside, as on a real machine (a Nomad
	// client creates its cgroups there).
	if out, err := sshRun(t, st, st.Machines[1], "mkdir /sys/fs/cgroup/memory/lab-test && rmdir /sys/fs/cgroup/memory/lab-test"); err != nil {
		t.Errorf("client-1 cannot create a memory cgroup: %v\n%s", err, out)
	}
	// client-1's data volume is a block device it can format and mount,
	// as a cloud volume, and the inventory names it.
	server, client := st.Machines[0], st.Machines[1]
	if client.Volume == "" || st.Inventory().Nodes[1].DataDevice != client.Volume || server.Volume != "" {
		t.Errorf("volumes: server-1 %q, client-1 %q, inventory %+v", server.Volume, client.Volume, st.Inventory().Nodes)
	}
	if out, err := sshRun(t, st, client, "mkfs.ext4 -q "+client.Volume+" && mkdir -p /mnt/v && mount "+client.Volume+" /mnt/v && echo kept > /mnt/v/f && umount /mnt/v && rmdir /mnt/v && blkid -o value -s TYPE "+client.Volume); err != nil || out != "ext4" {
		t.Errorf("client-1 cannot format and mount its data volume: %v\n%s", err, out)
	}
	// The machines reach each other on the bridge.
	if out, err := sshRun(t, st, server, "timeout 5 bash -c 'exec 3<>/dev/tcp/"+client.IP+"/22; head -c 7 <&3'"); err != nil || out != "SSH-2.0" {
		t.Errorf("server-1 cannot reach client-1's sshd: %v %q", err, out)
	}

	// The public network: the client has a public address on pub0, which
	// the inventory gives; the server has none.
	if client.PublicIP != "10.214.201.11" || server.PublicIP != "" || st.OutsideIP != "10.214.201.2" {
		t.Errorf("public addresses: client-1 %q, server-1 %q, outside %q", client.PublicIP, server.PublicIP, st.OutsideIP)
	}
	if inv := st.Inventory().Nodes; inv[1].PublicIP != client.PublicIP || inv[1].PrivateIP != client.IP || inv[0].PublicIP != "" {
		t.Errorf("inventory: %+v", inv)
	}
	if out, err := sshRun(t, st, client, "ip -4 -o addr show dev pub0"); err != nil || !strings.Contains(out, " "+client.PublicIP+"/24 ") {
		t.Errorf("client-1's pub0 should have %s: %v %q", client.PublicIP, err, out)
	}
	if out, err := sshRun(t, st, server, "ip -o link show dev pub0"); err == nil {
		t.Errorf("server-1 has a public interface: %s", out)
	}
	checkOutside(t, st, client, server)
	// An HTTP GET from outside (curl in the namespace) reaches a server on
	// the host's public address, not one on its private address.
	pubHost, _, _ := strings.Cut(st.PublicHostCIDR, "/")
	privHost, _, _ := strings.Cut(st.HostCIDR, "/")
	if body, err := outsideGetHost(t, st, pubHost); err != nil || !strings.HasPrefix(string(body), "hello "+st.OutsideIP+":") {
		t.Errorf("GET from outside to the host's public address %s: %v %q", pubHost, err, body)
	}
	if body, err := outsideGetHost(t, st, privHost); err == nil {
		t.Errorf("GET from outside reaches the host's private address %s: %q", privHost, body)
	}

	// A reboot from inside: nspawn exits 133 and the supervisor boots the
	// machine again.
	oldInit, err := lab.Init(client)
	if err != nil {
		t.Fatal(err)
	}
	sshRun(t, st, client, "systemctl reboot") // the connection may drop
	deadline := time.Now().Add(time.Minute)
	for {
		if pid, err := lab.Init(client); err == nil && pid != oldInit {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("client-1 did not come back after its reboot")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := lab.WaitReady(ctx, client, time.Minute); err != nil {
		t.Fatalf("after reboot: %v", err)
	}
	if out, err := sshRun(t, st, client, "systemctl is-system-running"); err != nil || out != "running" {
		t.Errorf("after reboot: %v %q", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(client.Dir, "console.log")); !strings.Contains(string(b), "systemd-nspawn exited 133") {
		t.Errorf("the console log shows no reboot (exit 133):\n%s", b)
	}
	// systemd-nspawn made the public veth anew, and it is on the bridge
	// again.
	checkOutside(t, st, client, server)

	// A power cut: every process of the machine ends at once; powered on,
	// it boots from its overlay with what it had written, its volume and
	// public address back.
	if out, err := sshRun(t, st, client, "echo kept > /root/before-the-cut"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	old := client.Supervisor
	if err := st.PullPlug(ctx, client.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.Nspawn(client); err == nil {
		t.Error("client-1's systemd-nspawn runs after its power was cut")
	}
	if err := st.PowerOn(ctx, client.Name); err != nil {
		t.Fatalf("power on after the cut: %v", err)
	}
	client, _ = st.Machine(client.Name)
	if client.Supervisor == old {
		t.Errorf("powered on with the old supervisor (pid %d)", old)
	}
	if out, err := sshRun(t, st, client, "cat /root/before-the-cut; blkid -o value -s TYPE "+client.Volume); err != nil || out != "kept\next4" {
		t.Errorf("after the power cut: %v %q, want the file it wrote and its formatted volume", err, out)
	}
	checkOutside(t, st, client, server)

	// What Down must remove, remembered before it runs.
	var pids []int
	for _, m := range st.Machines {
		pids = append(pids, m.Supervisor)
		if ns, err := lab.Nspawn(m); err == nil {
			pids = append(pids, ns)
		}
		if init, err := lab.Init(m); err == nil {
			pids = append(pids, init)
		}
	}
	// As if the lab's supervisor had been killed: Down still finds the
	// machine through its cgroup.
	if err := proc.Kill(ctx, client.Supervisor); err != nil {
		t.Fatal(err)
	}

	start = time.Now()
	if err := lab.Down(ctx, dir); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	t.Logf("lab down: %s", time.Since(start).Round(time.Millisecond))
	for _, pid := range pids {
		if proc.Alive(pid) {
			t.Errorf("pid %d still runs after lab down", pid)
		}
	}
	if _, err := net.InterfaceByName(st.Bridge); err == nil {
		t.Errorf("bridge %s left after lab down", st.Bridge)
	}
	checkNoPublic(t, st)
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if strings.HasPrefix(i.Name, "vb-lt") {
			t.Errorf("veth %s left after lab down", i.Name)
		}
	}
	if out, err := exec.Command("losetup", "--noheadings", "--associated", filepath.Join(client.Dir, "volume.img")).CombinedOutput(); err == nil && len(out) > 0 {
		t.Errorf("loop devices left after lab down: %s", out)
	}
	mounts, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(mounts), dir) {
		t.Errorf("mounts left under %s:\n%s", dir, mounts)
	}
	for _, m := range st.Machines {
		for _, cg := range m.Cgroups {
			if _, err := os.Stat(cg); err == nil {
				t.Errorf("cgroup %s left after lab down", cg)
			}
		}
		for _, c := range m.Controllers {
			if _, err := os.Stat(c.Dir); err == nil {
				t.Errorf("cgroup %s left after lab down", c.Dir)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "machines")); err == nil {
		t.Error("the machines' overlays are left after lab down")
	}
	// Idempotent: a second down has nothing to do.
	if err := lab.Down(ctx, dir); err != nil {
		t.Errorf("second lab down: %v", err)
	}
}

// checkNoPublic fails if anything of the lab's public network is left: its
// bridge, the outside namespace, or a veth of either.
func checkNoPublic(t *testing.T, st *lab.State) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join("/run/netns", st.OutsideNetns)); err == nil {
		t.Errorf("network namespace %s left after lab down", st.OutsideNetns)
	}
	ifs, _ := net.Interfaces()
	for _, i := range ifs {
		if i.Name == st.PublicBridge || i.Name == st.OutsideVeth || strings.HasPrefix(i.Name, "vp"+st.Name+"-") {
			t.Errorf("link %s left after lab down", i.Name)
		}
	}
}

// TestDownAfterKilledUp: Up stops part way, while its first machine boots
// (the bridges, the outside namespace, overlays and cgroups exist, a
// systemd-nspawn runs); Down removes it all from the state file alone.
func TestDownAfterKilledUp(t *testing.T) {
	need(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { lab.Down(context.Background(), dir) })
	// Cancel as soon as the first machine starts: the run stops part way.
	go func() {
		for ctx.Err() == nil {
			if _, err := os.Stat(filepath.Join(dir, "machines", "server-1", "console.log")); err == nil {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, upErr := lab.Up(ctx, lab.Config{Dir: dir, Name: "lk", Net: 203, Nodes: lab.Nodes(1, 1), Public: true, Owner: os.Getpid(), Log: testLog{t}})
	cancel()
	if upErr == nil {
		t.Log("up finished before it could be cancelled; down must still remove it all")
	}
	st, err := lab.Load(dir)
	if err != nil {
		t.Fatalf("no state after a cancelled up: %v", err)
	}
	// The run did stop part way: there is something to remove.
	if _, err := net.InterfaceByName(st.Bridge); err != nil {
		t.Fatalf("the cancelled up should have left its bridge %s: %v", st.Bridge, err)
	}
	if _, err := net.InterfaceByName(st.PublicBridge); err != nil {
		t.Fatalf("the cancelled up should have left its public bridge %s: %v", st.PublicBridge, err)
	}
	if _, err := os.Lstat(filepath.Join("/run/netns", st.OutsideNetns)); err != nil {
		t.Fatalf("the cancelled up should have left its outside namespace: %v", err)
	}
	if m := st.Machines[0]; m.Supervisor == 0 {
		t.Fatal("the cancelled up should have started server-1")
	}
	if err := lab.Down(context.Background(), dir); err != nil {
		t.Fatalf("lab down: %v", err)
	}
	if _, err := net.InterfaceByName(st.Bridge); err == nil {
		t.Errorf("bridge %s left", st.Bridge)
	}
	checkNoPublic(t, st)
	mounts, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(mounts), dir) {
		t.Errorf("mounts left under %s", dir)
	}
	for _, m := range st.Machines {
		for _, cg := range m.Cgroups {
			if _, err := os.Stat(cg); err == nil {
				t.Errorf("cgroup %s left", cg)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err == nil {
		t.Error("state file left after a successful down")
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestUpTakesDownAnOrphan: a lab whose owner died without taking it down
// (a test killed past its cleanup) is taken down by the next Up of its
// name; a lab whose owner runs is left alone, and the next Up is refused.
func TestUpTakesDownAnOrphan(t *testing.T) {
	need(t)
	ctx := context.Background()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	t.Cleanup(func() {
		for _, d := range dirs {
			if err := lab.Down(context.Background(), d); err != nil {
				t.Errorf("cleanup: lab down %s: %v", d, err)
			}
		}
	})
	owner := exec.Command("sleep", "600")
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	cfg := lab.Config{Dir: dirs[0], Name: "lo", Net: 207, Nodes: lab.Nodes(1, 0), Owner: owner.Process.Pid, Log: testLog{t}}
	orphan, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	if err := proc.Kill(ctx, owner.Process.Pid); err != nil {
		t.Fatal(err)
	}
	owner.Wait()

	cfg.Dir, cfg.Owner = dirs[1], os.Getpid()
	st, err := lab.Up(ctx, cfg)
	if err != nil {
		t.Fatalf("lab up over an orphan of its name: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dirs[0], "state.json")); err == nil {
		t.Errorf("the orphan's state is still in %s", dirs[0])
	}
	if proc.Alive(orphan.Machines[0].Supervisor) {
		t.Errorf("the orphan's machine still runs (supervisor pid %d)", orphan.Machines[0].Supervisor)
	}
	if out, err := lab.Exec(ctx, st.Machines[0], "true"); err != nil {
		t.Errorf("the new lab's machine: %v\n%s", err, out)
	}

	cfg.Dir = dirs[2]
	if _, err := lab.Up(ctx, cfg); err == nil || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), dirs[1]) {
		t.Errorf("lab up beside a lab of its name whose owner runs: %v, want refused, naming %s", err, dirs[1])
	} else {
		t.Logf("refused: %v", err)
	}
	if out, err := lab.Exec(ctx, st.Machines[0], "true"); err != nil {
		t.Errorf("the running lab after a refused up of its name: %v\n%s", err, out)
	}
}
