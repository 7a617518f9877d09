package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Mistakes in a backup or restore command line exit 2 before anything is
// touched: no state directory appears.
func TestBackupRestoreUsage(t *testing.T) {
	cfg := minimalConfig(t)
	dir := filepath.Dir(cfg)
	notArchive := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notArchive, []byte("not a backup\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pass := passphraseEnv + "=a passphrase"
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"backup without a key", nil, []string{"backup"}, "no key to encrypt the backup to"},
		{"backup with a passphrase and a recipient", []string{pass}, []string{"backup", "--recipient", "age1x"}, "not both"},
		{"backup to a bad recipient", nil, []string{"backup", "--recipient", "ssh-rsa AAAA"}, `recipient "ssh-rsa AAAA"`},
		{"restore without a key", nil, []string{"restore", notArchive}, "no key to decrypt the backup with"},
		{"restore of a missing file", []string{pass}, []string{"restore", filepath.Join(dir, "missing.age")}, "no such file"},
		{"restore of a file that is no backup", []string{pass}, []string{"restore", notArchive}, "not a bootstrap backup"},
		{"restore without a file", []string{pass}, []string{"restore"}, "accepts 1 arg"},
		{"rotation of an unknown CA", nil, []string{"rotate", "ca", "vault"}, `no CA "vault"`},
		{"rotation of unknown tokens", nil, []string{"rotate", "tokens", "ci", "root"}, `no tokens of kind "root"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runIn(t, dir, childEnv(t, tc.env...), append(tc.args, "-c", cfg)...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("exit %d, want 2 and %q\n%s%s", r.code, tc.want, r.stdout, r.stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, ".bootstrap")); err == nil {
				t.Error("a state directory was created")
			}
		})
	}
}
