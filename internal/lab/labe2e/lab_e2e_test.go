// Package labe2e_test runs bootstrap's path to production end to end on the
// machine lab: a static inventory of real systemd machines reached over
// SSH, services as systemd units, binaries copied over (install_method
// binary), then down, and each machine is diffed against how it was.
package labe2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/apitls/apitlstest"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/lab"
	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/stages/nomad"
	"github.com/platform-bootstrap/bootstrap/tools"
)

func TestLabProduction(t *testing.T) {
	needLab(t)
	labDir := t.TempDir()
	// Registered first, so it runs last: after the platform's own cleanup.
	t.Cleanup(func() {
		if err := lab.Down(context.Background(), labDir); err != nil {
			t.Errorf("cleanup: lab down: %v", err)
		}
	})
	p := platformtest.Prepare(t)
	ctx := context.Background()

	start := time.Now()
	// Consul and Nomad of the patch releases before the pins, until the
	// upgrade subtest.
	binDir, upgrade := platformtest.PreviousBinDir(t)
	st, err := lab.Up(ctx, lab.Config{Dir: labDir, Name: "le", Net: 202, Nodes: lab.Nodes(servers, clients), BinDir: binDir, DataVolumes: []string{"client-1"}, Public: true, Owner: os.Getpid(), Log: testLog{t}})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Logf("lab up, %d machines: %s", len(st.Machines), time.Since(start).Round(time.Second))
	// Registered after the platform's cleanup, so it runs before its down:
	// a failed run's only trace of the machines' services is their journal.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, m := range st.Machines {
			args := []string{"journalctl", "--no-pager", "-o", "short-precise", "-n", "60"}
			for _, u := range []string{"vault", "ct-consul", "consul", "ct-nomad", "nomad", "node-exporter"} {
				args = append(args, "-u", u)
			}
			out, err := lab.Exec(context.Background(), m, args...)
			t.Logf("%s: the end of its services' journal (%v):\n%s", m.Name, err, out)
		}
	})
	hcl, err := os.ReadFile(st.ConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	// Prod is served over HTTPS with the user's own certificate: here from
	// the test's CA, which the outside trusts as a browser trusts Let's
	// Encrypt's. Plain HTTP is the same listener without the certificate,
	// checked where the job file is rendered (jobs.TestJobsOnNomad).
	var publicIPs []string
	for _, m := range st.Machines {
		if m.PublicIP != "" {
			publicIPs = append(publicIPs, m.PublicIP)
		}
	}
	ingressCA := apitlstest.NewCA(t, "lab ingress")
	_, ingressKey := apitlstest.WritePair(t, p.Dir, ingressCA.Issue(t, []string{"app.lab.example"}, publicIPs...))
	withTLS := strings.Replace(string(hcl), "ingress {\n  namespace = \"prod\"\n",
		"ingress {\n  namespace = \"prod\"\n  tls {\n    cert_file = \"fullchain.pem\"\n    key_file  = \"privkey.pem\"\n  }\n", 1)
	if withTLS == string(hcl) {
		t.Fatalf("lab.hcl has no ingress block for prod:\n%s", hcl)
	}
	p.WriteConfig(withTLS)

	before := map[string]snapshot{}
	for _, m := range st.Machines {
		before[m.Name] = snap(t, m)
	}

	start = time.Now()
	r := p.Up()
	t.Logf("bootstrap up: %s\n%s", time.Since(start).Round(time.Second), r.Stdout)

	t.Run("services are systemd units", func(t *testing.T) {
		for _, m := range st.Machines {
			want := []string{"consul.service", "nomad.service"}
			if m.Name == "server-1" {
				want = append(want, "vault.service")
			}
			for _, u := range want {
				out, err := lab.Exec(ctx, m, "systemctl", "is-active", u)
				if err != nil || strings.TrimSpace(string(out)) != "active" {
					t.Errorf("%s: %s is %q: %v", m.Name, u, strings.TrimSpace(string(out)), err)
				}
			}
		}
	})

	// client-1's data volume stands in for the DigitalOcean volume: blank
	// at first, formatted and mounted by the nomad role, and Prometheus,
	// placed on the clients with one, keeps its TSDB there.
	t.Run("prometheus keeps its TSDB on client-1's data volume", func(t *testing.T) {
		m, _ := st.Machine("client-1")
		out, err := lab.Exec(ctx, m, "findmnt", "--noheadings", "--output", "SOURCE,FSTYPE", inventory.DataMount)
		if got := strings.Fields(string(out)); err != nil || !slices.Equal(got, []string{m.Volume, "ext4"}) {
			t.Fatalf("client-1: %s is %q (%v), want %s mounted as ext4", inventory.DataMount, out, err, m.Volume)
		}
		if out, err := lab.Exec(ctx, m, "grep", "-c", "^"+m.Volume+" "+inventory.DataMount+" ext4 ", "/etc/fstab"); err != nil {
			t.Errorf("client-1: the volume is not in fstab: %v %s", err, out)
		}
		_, nc := apiClients(t, p.Env("admin"))
		allocs, _, err := nc.Jobs().Allocations("prometheus", false, &nomadapi.QueryOptions{Namespace: "general"})
		if err != nil {
			t.Fatal(err)
		}
		var nodes []string
		for _, a := range allocs {
			if a.TaskGroup == "prometheus" && a.ClientStatus == nomadapi.AllocClientStatusRunning {
				nodes = append(nodes, a.NodeName)
			}
		}
		if !slices.Equal(nodes, []string{"client-1"}) {
			t.Errorf("prometheus runs on %v, want client-1 (the client with the data volume)", nodes)
		}
		tsdb := inventory.DataMount + "/nomad-volumes/prometheus-data/wal"
		if out, err := lab.Exec(ctx, m, "test", "-d", tsdb); err != nil {
			t.Errorf("client-1: no TSDB at %s: %v %s", tsdb, err, out)
		}
	})

	// verify is up's last stage: what a user checks by hand (Prometheus's
	// targets, Grafana's dashboards, Fabio's routes, the UIs), on the
	// machines' addresses.
	t.Run("verify", func(t *testing.T) {
		if !strings.Contains(r.Stdout, "verify     changed") {
			t.Errorf("up did not run the verify stage:\n%s", r.Stdout)
		}
		p := p.T(t)
		start := time.Now()
		p.Up("--only", "verify")
		t.Logf("verify again: %s", time.Since(start).Round(time.Second))
	})

	t.Run("second up changes nothing", func(t *testing.T) {
		p := p.T(t)
		start := time.Now()
		r := p.Up()
		t.Logf("second up: %s", time.Since(start).Round(time.Second))
		if strings.Contains(r.Stdout, " changed ") {
			t.Errorf("a stage changed on the second up:\n%s", r.Stdout)
		}
	})

	// What a user's GitLab pipeline does: bootstrap deploy with dev's CI
	// token, the exec driver on the machines, dev's Fabio routing it.
	t.Run("bootstrap deploy into dev with its CI token", func(t *testing.T) {
		p := p.T(t)
		ci := p.Env("ci-dev")
		start := time.Now()
		deploy(t, p.Bin, ci, "dev")
		t.Logf("deploy: %s", time.Since(start).Round(time.Second))
		url := p.Env("admin")["FABIO_DEV_ADDR"] + "/web/"
		eventually(t, time.Minute, "dev's Fabio serving "+url, func() error {
			body, err := getBody(url)
			if err == nil && body != "ok abc1234" {
				err = fmt.Errorf("body %q, want %q", body, "ok abc1234")
			}
			return err
		})
	})

	// The ingress block makes prod public, as on a cloud: a user on the
	// Internet (the lab's outside network namespace, which reaches only the
	// clients' public addresses) gets prod's application over HTTPS, is
	// redirected there from port 80, and gets nothing of dev's or the
	// platform's.
	t.Run("prod is served on the clients' public addresses over HTTPS, and nothing else is", func(t *testing.T) {
		p := p.T(t)
		deploy(t, p.Bin, p.Env("ci-prod"), "prod")
		c1, _ := st.Machine("client-1")
		if got, want := p.Env("admin")["FABIO_PROD_ADDR"], "https://"+c1.PublicIP; got != want {
			t.Errorf("up prints prod's address as %q, want %q", got, want)
		}
		for _, name := range []string{"client-1", "client-2"} {
			m, _ := st.Machine(name)
			url := "https://" + m.PublicIP + "/web/"
			eventually(t, time.Minute, "prod's Fabio serving "+url+" to the outside with the user's certificate", func() error {
				body, err := st.OutsideCurl(ctx, "--cacert", ingressCA.File, "--fail-with-body", url)
				if err == nil && string(body) != "ok abc1234" {
					err = fmt.Errorf("body %q, want %q", body, "ok abc1234")
				}
				return err
			})
			out, err := st.OutsideCurl(ctx, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "http://"+m.PublicIP+"/web/?v=1")
			if want := "301 https://" + m.PublicIP + "/web/?v=1"; err != nil || string(out) != want {
				t.Errorf("the outside's GET http://%s/web/?v=1: %q, %v; want %q", m.PublicIP, out, err, want)
			}
			s1, _ := st.Machine("server-1")
			for _, u := range []string{
				"https://" + m.PublicIP + "/prometheus/-/ready",     // the platform's routes on prod's Fabio
				"http://" + m.PublicIP + ":9999/prometheus/-/ready", // the platform's Fabio
				"http://" + m.PublicIP + ":9998/",                   // its routing UI
				"http://" + m.PublicIP + ":10001/web/",              // dev's Fabio
				"http://" + m.PublicIP + ":10002/web/",              // prod's, on its private port
				"http://" + m.IP + ":10002/web/",                    // the private address
				"https://" + s1.IP + ":4646/v1/status/leader",       // a server
			} {
				if body, err := st.OutsideGet(ctx, u); err == nil {
					t.Errorf("the outside reaches %s: %q", u, body)
				}
			}
			// A client's HTTPS APIs answer on its public address (bootstrap
			// reaches them there from outside the private network; a cloud
			// firewall limits them to the admin range), but serve no UI:
			// Nomad's /ui/ is its "disabled" page on a client, Consul's is
			// off.
			u := "https://" + m.PublicIP + ":4646/ui/"
			if body, err := st.OutsideGet(ctx, u); err != nil || !strings.Contains(string(body), "Nomad UI is disabled") {
				t.Errorf("the outside's GET %s: %q, %v; want Nomad's page for a disabled UI", u, body, err)
			}
			u = "https://" + m.PublicIP + ":8501/ui/"
			if body, err := st.OutsideGet(ctx, u); err == nil && strings.Contains(string(body), "consul-ui/config/environment") {
				t.Errorf("the outside gets Consul's web UI from %s", u)
			}
		}
		// The outside's GET works at all: from the host, the private
		// listener of prod's Fabio still serves.
		if body, err := getBody("http://" + c1.IP + ":10002/web/"); err != nil || body != "ok abc1234" {
			t.Errorf("prod's Fabio on client-1's private address: %q, %v", body, err)
		}
		// The key is in Vault, for Fabio's tasks alone: not in the job, nor
		// in the state.
		key, err := os.ReadFile(ingressKey)
		if err != nil {
			t.Fatal(err)
		}
		_, nc := apiClients(t, p.Env("admin"))
		job, _, err := nc.Jobs().Info("fabio", &nomadapi.QueryOptions{Namespace: "general"})
		if err != nil {
			t.Fatal(err)
		}
		spec, err := json.Marshal(job)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(spec), string(key[40:80])) {
			t.Error("the fabio job holds the certificate's key")
		}
		if out, _ := exec.Command("grep", "-rlF", string(key[40:80]), p.StateDir()).Output(); len(out) > 0 {
			t.Errorf("the state directory holds the certificate's key: %s", out)
		}
	})

	// The systemd path of a rolling upgrade: the pinned binaries are linked
	// into the lab's bin_dir, up copies them over and restarts each unit
	// (the order is TestPlatformDay2's business). Every agent then runs the
	// copy it has, which is the pinned version.
	t.Run("consul and nomad upgrade unit by unit", func(t *testing.T) {
		p := p.T(t)
		_, nc := apiClients(t, p.Env("admin"))
		before := taskStarts(t, nc)
		upgrade()
		start := time.Now()
		r := p.Up()
		t.Logf("upgrade: %s", time.Since(start).Round(time.Second))
		if !strings.Contains(r.Stdout, "new binaries: consul") || !strings.Contains(r.Stdout, "new binaries: nomad") {
			t.Errorf("up does not say it installs new binaries:\n%s", r.Stdout)
		}
		// Restarting a client's agent leaves its tasks running: the new
		// agent reattaches to them, none is started again.
		after := taskStarts(t, nc)
		for task, started := range before {
			if after[task] != started {
				t.Errorf("%s: started at %s before the upgrade, at %q after: the client's restart stopped it", task, started, after[task])
			}
		}
		v := tools.Versions()
		for _, m := range st.Machines {
			for svc, want := range map[string]string{"consul": "v" + v["CONSUL_VERSION"], "nomad": "v" + v["NOMAD_VERSION"]} {
				out, err := lab.Exec(ctx, m, "sh", "-c", "exe=$(readlink /proc/$(systemctl show -p MainPID --value "+svc+")/exe) && echo \"$exe\" && \"$exe\" version")
				if got := string(out); err != nil || strings.Contains(got, "(deleted)") || !strings.Contains(got, want) {
					t.Errorf("%s: %s runs %q (%v), want the installed %s", m.Name, svc, strings.TrimSpace(got), err, want)
				}
			}
		}
		if r := p.Up(); strings.Contains(r.Stdout, " changed ") {
			t.Errorf("a stage changed on the up after the upgrade:\n%s", r.Stdout)
		}
	})

	t.Run("a new unit restarts the servers one at a time", func(t *testing.T) {
		oldUnits(t, p.T(t), st)
	})
	t.Run("a server rebooted from inside: up unseals its vault", func(t *testing.T) {
		rebootServer(t, p.T(t), st)
	})
	t.Run("a server cut off the network: a leader and the services stay", func(t *testing.T) {
		cutServer(t, p.T(t), st)
	})
	t.Run("a client powered off and back: its jobs move, it rejoins", func(t *testing.T) {
		powerCycleClient(t, p.T(t), st)
	})

	// Scale in over SSH: the static provider's path. The platform jobs on
	// client-2 move to client-1, and the teardown play leaves client-2 as
	// it was before the first up.
	t.Run("a removed client is drained and its machine left as it was", func(t *testing.T) {
		p := p.T(t)
		inv := st.Inventory()
		inv.Nodes = slices.DeleteFunc(inv.Nodes, func(n inventory.Node) bool { return n.Name == "client-2" })
		if err := inv.Save(st.InventoryFile()); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		r := p.Up()
		t.Logf("up without client-2: %s", time.Since(start).Round(time.Second))
		if !strings.Contains(r.Stdout, "provision  changed") {
			t.Errorf("the provision stage did not remove client-2:\n%s", r.Stdout)
		}
		env := p.Env("admin")
		nc, err := nomad.NewClient(env["NOMAD_ADDR"], env["NOMAD_CACERT"], env["NOMAD_TOKEN"])
		if err != nil {
			t.Fatal(err)
		}
		nodes, _, err := nc.Nodes().List(nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.Name == "client-2" {
				t.Errorf("nomad still lists client-2 (%s)", n.Status)
			}
		}
		m, _ := st.Machine("client-2")
		if d := before[m.Name].diff(snap(t, m)); d != "" {
			t.Errorf("client-2 differs after its removal:\n%s", d)
		}
	})

	t.Run("down leaves each machine as it was", func(t *testing.T) {
		p := p.T(t)
		start := time.Now()
		if r := p.Run([]string{"down", "--auto-approve"}); r.Code != 0 {
			t.Fatalf("down: exit %d\n%s", r.Code, r.Output())
		}
		t.Logf("down: %s", time.Since(start).Round(time.Second))
		for _, m := range st.Machines {
			if d := before[m.Name].diff(snap(t, m)); d != "" {
				t.Errorf("%s differs after down:\n%s", m.Name, d)
			}
		}
	})
	p.AssertNoSecrets()
}

// deploy runs what a user's GitLab pipeline does: bootstrap deploy of the
// web job into ns with that namespace's CI token.
func deploy(t *testing.T, bin string, ci map[string]string, ns string) {
	t.Helper()
	job := filepath.Join(t.TempDir(), "web.nomad.hcl")
	if err := os.WriteFile(job, []byte(strings.ReplaceAll(webJob, "NAMESPACE", ns)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "deploy", job, "--timeout", "3m")
	cmd.Env = append(os.Environ(), "NOMAD_ADDR="+ci["NOMAD_ADDR"], "NOMAD_CACERT="+ci["NOMAD_CACERT"], "NOMAD_TOKEN="+ci["NOMAD_TOKEN"], "CI_COMMIT_SHORT_SHA=abc1234", "CI=true")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bootstrap deploy into %s: %v\n%s", ns, err, out)
	}
}

// webJob is an application (NAMESPACE is dev or prod): a small web server
// in Perl, which the machines have (perl-base) inside the exec driver's
// chroot (its libraries live under /usr/lib/x86_64-linux-gnu), behind the
// namespace's Fabio.
const webJob = `job "web" {
  namespace   = "NAMESPACE"
  datacenters = ["*"]
  group "web" {
    network {
      port "http" {}
    }
    service {
      name     = "NAMESPACE-web"
      port     = "http"
      address  = "${meta.node_address}"
      provider = "consul"
      tags     = ["urlprefix-/web strip=/web"]
      check {
        type     = "http"
        path     = "/"
        interval = "5s"
        timeout  = "2s"
      }
    }
    task "web" {
      driver = "exec"
      config {
        command = "/usr/bin/perl"
        args    = ["${NOMAD_TASK_DIR}/server.pl", "${meta.node_address}", "${NOMAD_PORT_http}", "${NOMAD_TASK_DIR}/index.html"]
      }
      template {
        data        = "ok ${CI_COMMIT_SHORT_SHA}"
        destination = "local/index.html"
      }
      template {
        destination = "local/server.pl"
        data        = <<PERL
use strict;
use IO::Socket::INET;
my ($addr, $port, $file) = @ARGV;
my $srv = IO::Socket::INET->new(LocalAddr => $addr, LocalPort => $port, Listen => 16, ReuseAddr => 1) or die "listen: $!";
while (my $c = $srv->accept) {
  while (my $l = <$c>) { last if $l =~ /^\r?\n$/; }
  open(my $f, "<", $file) or die "$file: $!";
  my $body = do { local $/; <$f> };
  close $f;
  print $c "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($body) . "\r\nConnection: close\r\n\r\n" . $body;
  close $c;
}
PERL
      }
      resources {
        cpu    = 50
        memory = 64
      }
    }
  }
}
`

// The machines: enough for quorum and for jobs on more than one client.
const servers, clients = 3, 2

// snapshot is what a machine holds: its file tree (type, mode, owner,
// size; not times) and its systemd units.
type snapshot struct {
	files map[string]string
	units map[string]string
}

// volatile are paths that change on a machine whether or not bootstrap ran,
// and Ansible's own remote temporary directory, which every run over SSH
// creates (bootstrap's runs leave their empty subdirectories there).
// var/backups is where Debian's dpkg-db-backup.timer writes at midnight: a
// run that crossed 00:00 found its files on every machine. apt-daily.timer
// (06:00 and 18:00, randomized by up to 12 h) takes var/lib/apt/daily_lock
// and stamps var/lib/apt/periodic: a cold CI run found the lock on two
// machines. The rest of var/lib/apt is compared: package lists or states
// left by a role are ours.
var volatile = []string{"proc", "sys", "dev", "run", "tmp", "var/tmp", "var/log", "var/cache", "var/lib/systemd", "var/lib/dhcp", "var/backups", "var/lib/apt/daily_lock", "var/lib/apt/periodic", "root/.ansible"}

func snap(t *testing.T, m lab.Machine) snapshot {
	t.Helper()
	s := snapshot{files: map[string]string{}, units: map[string]string{}}
	root := m.Root()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if slices.Contains(volatile, rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil // SkipDir on a file would skip the rest of its directory
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode().IsRegular():
			desc += fmt.Sprintf(" %d bytes", fi.Size())
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		s.files[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("%s: walk its tree: %v", m.Name, err)
	}
	out, err := lab.Exec(context.Background(), m, "systemctl", "list-units", "--all", "--plain", "--no-legend", "--no-pager")
	if err != nil {
		t.Fatalf("%s: list units: %v\n%s", m.Name, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		// Which units exist and load, not their runtime state: a target
		// the platform's units pulled in (network-online) stays active.
		s.units[f[0]] = f[1]
	}
	return s
}

// diff lists what was added, removed or changed, at most 60 lines.
func (a snapshot) diff(b snapshot) string {
	var lines []string
	cmp := func(kind string, x, y map[string]string) {
		for k, v := range y {
			if w, ok := x[k]; !ok {
				lines = append(lines, fmt.Sprintf("+ %s %s (%s)", kind, k, v))
			} else if w != v {
				lines = append(lines, fmt.Sprintf("~ %s %s (%s, was %s)", kind, k, v, w))
			}
		}
		for k, v := range x {
			if _, ok := y[k]; !ok {
				lines = append(lines, fmt.Sprintf("- %s %s (%s)", kind, k, v))
			}
		}
	}
	cmp("file", a.files, b.files)
	cmp("unit", a.units, b.units)
	sort.Strings(lines)
	if len(lines) > 60 {
		lines = append(lines[:60], fmt.Sprintf("... and %d more", len(lines)-60))
	}
	return strings.Join(lines, "\n")
}

// testLog relays the lab's own log into the test's, marked so that
// .ci/failures leaves it out of its summary.
type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log("[lab] " + strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// taskStarts returns when each task of the running platform allocations
// was last started, by "job/alloc/task": its last Started event, which a
// task started again by its client adds (its state's StartedAt and
// Restarts stay as they were when a restored client restarts it).
func taskStarts(t *testing.T, nc *nomadapi.Client) map[string]string {
	t.Helper()
	allocs, _, err := nc.Allocations().List(&nomadapi.QueryOptions{Namespace: "general"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, a := range allocs {
		if a.ClientStatus != nomadapi.AllocClientStatusRunning {
			continue
		}
		for task, ts := range a.TaskStates {
			for _, ev := range ts.Events {
				if ev.Type == nomadapi.TaskStarted {
					out[a.JobID+"/"+a.ID[:8]+"/"+task] = time.Unix(0, ev.Time).UTC().Format(time.RFC3339Nano)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no running task in general")
	}
	return out
}
