package platform_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/internal/poll"
	"github.com/platform-bootstrap/bootstrap/internal/proc"
	"github.com/platform-bootstrap/bootstrap/stages/nomad"
)

// backupRestore is the journey of issue 18's backup: on a platform with an
// application in dev, a KV secret is written, a backup taken, the platform
// destroyed and rebuilt from the backup, with a kill in the middle of the
// restore. The same Vault data behind the same unseal keys, the same ACL
// tokens, the same jobs and the application answering must be back.
func backupRestore(t *testing.T, p *platformtest.Platform) {
	env := p.Env("admin")
	if _, err := vaultClient(t, env).KVv2("secret").Put(t.Context(), "dev/web/config", map[string]any{"greeting": "restored-from-backup"}); err != nil {
		t.Fatal(err)
	}
	secret := func(name string) string {
		b, err := os.ReadFile(filepath.Join(p.StateDir(), "secrets", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	unsealKeys, ciDev, consulMgmt := secret("vault/init.json"), secret("nomad/tokens/ci-dev"), secret("consul/bootstrap-token")
	jobsBefore := p.Jobs()

	const pass = "BOOTSTRAP_BACKUP_PASSPHRASE=a passphrase for the test"
	archive := filepath.Join(t.TempDir(), "platform.age")
	if r := p.Run([]string{"backup", "-o", archive}, pass); r.Code != 0 {
		t.Fatalf("backup: exit %d\n%s", r.Code, r.Output())
	}
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(archive); fi.Mode().Perm() != 0o600 {
		t.Errorf("the backup is %v, want 0600", fi.Mode().Perm())
	}
	for _, s := range []string{ciDev, consulMgmt, "restored-from-backup", "keys_base64"} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("the backup holds %q in clear text", s)
		}
	}

	t.Run("a wrong key, a damaged archive and a live platform are refused", func(t *testing.T) {
		damaged := filepath.Join(t.TempDir(), "damaged.age")
		c := bytes.Clone(b)
		c[len(c)/2] ^= 1
		if err := os.WriteFile(damaged, c, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			file, env, want string
		}{
			{archive, "BOOTSTRAP_BACKUP_PASSPHRASE=not the passphrase", "wrong passphrase"},
			{damaged, pass, "damaged"},
			{archive, pass, "run bootstrap down first"},
		} {
			r := p.Run([]string{"restore", tc.file, "--auto-approve"}, tc.env)
			if r.Code != 2 || !strings.Contains(r.Stderr, tc.want) || !strings.Contains(r.Stderr, "nothing was changed") {
				t.Errorf("restore %s with %s: exit %d, want 2 and %q\n%s", filepath.Base(tc.file), tc.env, r.Code, tc.want, r.Output())
			}
		}
		if r := p.Run([]string{"plan"}); r.Code != 0 {
			t.Errorf("plan after the refused restores: exit %d\n%s", r.Code, r.Output())
		}
	})

	if r := p.Run([]string{"down", "--auto-approve"}); r.Code != 0 {
		t.Fatalf("down: exit %d\n%s", r.Code, r.Output())
	}
	if pids, _ := proc.Under(p.Dir); len(pids) > 0 {
		t.Fatalf("processes left after down: %v", pids)
	}

	// Killed right after the throwaway init, before its keys were stored
	// (the next restore wipes that Vault and starts again); right after
	// Vault took the snapshot, before it sealed itself to take the
	// backup's keys; and right after Consul's and Nomad's snapshots went
	// in, before the old nodes were removed. Each next run carries on, the
	// last up finishes the restore.
	for _, run := range []struct{ command, crash string }{
		{"restore", "vault:restore-after-init"},
		{"restore", "vault:after-restore-snapshot"},
		{"up", "consul:after-restore-snapshot"},
		{"up", "nomad:after-restore-snapshot"},
	} {
		args := []string{"up", "--auto-approve"}
		if run.command == "restore" {
			args = []string{"restore", archive, "--auto-approve"}
		}
		if r := p.Run(args, pass, "BOOTSTRAP_CRASHPOINT="+run.crash); r.Code == 0 {
			t.Fatalf("the crash point %s did not fire:\n%s", run.crash, r.Output())
		}
	}
	r := p.Up()
	if !strings.Contains(r.Stdout, "restore nomad") {
		t.Errorf("the up after the killed restore did not restore nomad:\n%s", r.Stdout)
	}
	if _, err := os.Stat(filepath.Join(p.StateDir(), "restore")); err == nil {
		t.Error("the restore directory is left after the restore finished")
	}
	if r := p.Run([]string{"plan"}); r.Code != 0 {
		t.Errorf("plan after the restore: exit %d\n%s", r.Code, r.Output())
	}

	env = p.Env("admin")
	if got := secret("vault/init.json"); got != unsealKeys {
		t.Error("the restored platform has other unseal keys")
	}
	kv, err := vaultClient(t, env).KVv2("secret").Get(t.Context(), "dev/web/config")
	if err != nil || kv.Data["greeting"] != "restored-from-backup" {
		t.Errorf("the KV secret written before the backup: %v, %v", kv, err)
	}
	ci := p.Env("ci-dev")
	if ci["NOMAD_TOKEN"] != ciDev {
		t.Error("the restored platform has another CI token for dev")
	}
	nc, err := nomad.NewClient(ci["NOMAD_ADDR"], ci["NOMAD_CACERT"], ciDev)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := nc.Jobs().Info("web", &nomadapi.QueryOptions{Namespace: "dev"}); err != nil {
		t.Errorf("the CI token of before the backup reads dev's job: %v", err)
	}
	if got := p.Jobs(); !slices.Equal(got, jobsBefore) {
		t.Errorf("jobs after the restore: %v, want %v", got, jobsBefore)
	}
	// The application's allocation was on a node of the old platform: it
	// is placed again once the new clients have registered.
	err = poll.Retry(context.Background(), 5*time.Minute, time.Second, func() error { return get200(env["FABIO_DEV_ADDR"] + "/web/") }, poll.Never)
	if err != nil {
		t.Errorf("the dev application answering through fabio after the restore: %v", err)
		allocs, _, aerr := nc.Jobs().Allocations("web", true, &nomadapi.QueryOptions{Namespace: "dev"})
		for _, a := range allocs {
			t.Logf("dev/web allocation %s on %s: %s/%s", a.ID[:8], a.NodeName, a.DesiredStatus, a.ClientStatus)
			for name, ts := range a.TaskStates {
				for _, ev := range ts.Events {
					t.Logf("  %s: %s %s", name, ev.Type, ev.DisplayMessage)
				}
			}
		}
		t.Logf("allocations: %v; status:\n%s", aerr, p.Run([]string{"status"}).Stdout)
	}
}
