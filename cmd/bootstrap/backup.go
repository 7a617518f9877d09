package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/platform-bootstrap/bootstrap/internal/archive"
	"github.com/platform-bootstrap/bootstrap/internal/fsutil"
	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/backup"
	"github.com/platform-bootstrap/bootstrap/tools"
)

// passphraseEnv holds the passphrase of backups, for those who use one
// instead of age keys.
const passphraseEnv = "BOOTSTRAP_BACKUP_PASSPHRASE"

func newBackupCmd(g *globals) *cobra.Command {
	var out string
	var recipients []string
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Write an encrypted backup of the platform: Vault, Consul and Nomad snapshots and the state directory's secrets",
		Long: `backup takes snapshots of Vault (raft), Consul and Nomad through their APIs,
reads the state directory's secrets (unseal keys, tokens, gossip keys, CA keys)
and TLS files, and writes them in one archive with a manifest of versions and
checksums, encrypted with age: to the passphrase in ` + passphraseEnv + `, or
to the age public keys given with --recipient. Nothing is written in clear
text. bootstrap restore rebuilds the platform from it.

The archive holds every secret of the platform: keep it like the unseal keys.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			to, err := archive.Keys{Passphrase: os.Getenv(passphraseEnv), Recipients: recipients}.EncryptTo()
			if err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("%w: set %s, or give --recipient KEY (an age public key, age1…)", err, passphraseEnv)}
			}
			return g.execute("backup", func(ctx context.Context, r *stages.Runner, _ stages.Selection, _ *stages.Session) ([]statedir.StageResult, error) {
				m, entries, err := backup.Take(ctx, r.Env, version)
				if err != nil {
					return nil, err
				}
				path := out
				if path == "" {
					path = fmt.Sprintf("backup-%s-%s.age", m.Datacenter, m.Created.Format("20060102T150405Z"))
				}
				var buf bytes.Buffer
				if err := archive.Write(&buf, to, m, entries); err != nil {
					return nil, fmt.Errorf("backup: %w", err)
				}
				if err := fsutil.WriteFile(path, buf.Bytes(), 0o600); err != nil {
					return nil, fmt.Errorf("backup: %w", err)
				}
				var versions []string
				for _, p := range slices.Sorted(maps.Keys(m.Versions)) {
					versions = append(versions, p+" "+m.Versions[p])
				}
				r.Env.Step("wrote %s (%d KiB, encrypted): snapshots of %s and %d files of the state directory", path, buf.Len()/1024, strings.Join(versions, ", "), len(entries)-len(m.Versions))
				return nil, nil
			})
		},
	}
	cmd.Flags().StringVarP(&out, "output-file", "o", "", "write the backup to `FILE` (default: backup-DATACENTER-TIME.age here)")
	cmd.Flags().StringArrayVar(&recipients, "recipient", nil, "encrypt to this age public `KEY` (age1...; repeatable) instead of a passphrase")
	return cmd
}

func newRestoreCmd(g *globals) *cobra.Command {
	var identity string
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Rebuild the platform from a backup, into a state directory that holds none",
		Long: `restore decrypts and checks a backup (with the passphrase in ` + passphraseEnv + `
or the age identity file given with --identity), puts its secrets and TLS files
into the state directory, and runs up: the new Vault takes the backup's raft
snapshot and is unsealed with the backup's keys, and Consul and Nomad take
their snapshots right after their ACL bootstrap with the backup's management
tokens. The same Vault data, ACL tokens, KV, jobs and variables are back; the
jobs are placed on the new clients. Prometheus's metrics history is not part
of a backup.

A wrong key, a damaged archive, a backup of another datacenter or a state
directory that holds a platform is refused with exit 2, and nothing is changed.
A restore that was interrupted is finished by running it, or up, again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := archive.Keys{Passphrase: os.Getenv(passphraseEnv), IdentityFile: identity}.DecryptWith()
			if err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("%w: set %s, or give --identity FILE", err, passphraseEnv)}
			}
			f, err := os.Open(args[0])
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			defer f.Close()
			m, entries, err := archive.Read(f, ids)
			if err != nil {
				var bad *archive.Error
				if errors.As(err, &bad) {
					return &exitError{code: exitUsage, err: fmt.Errorf("%s: %w; nothing was changed", args[0], err)}
				}
				return &exitError{code: exitFailure, err: err}
			}
			return g.execute("restore", func(ctx context.Context, r *stages.Runner, sel stages.Selection, _ *stages.Session) ([]statedir.StageResult, error) {
				if err := backup.Check(r.Env, m, entries); err != nil {
					return nil, &stages.UsageError{Msg: fmt.Sprintf("%s: %v; nothing was changed", args[0], err)}
				}
				pins := tools.Versions()
				for _, p := range slices.Sorted(maps.Keys(m.Versions)) {
					pin, have := pins[strings.ToUpper(p)+"_VERSION"], strings.TrimPrefix(m.Versions[p], "v")
					if pin != "" && !strings.HasPrefix(have, pin) {
						r.Env.Warnf("the backup was taken with %s %s and this bootstrap installs %s %s: a snapshot may not restore into an older version", p, have, p, pin)
					}
				}
				var inUse *backup.InUseError
				if err := backup.Unpack(r.Env, m, entries); errors.As(err, &inUse) {
					return nil, &stages.UsageError{Msg: fmt.Sprintf("%s: %v; nothing was changed", args[0], err)}
				} else if err != nil {
					return nil, err
				}
				r.Env.Step("restoring the backup of %s (bootstrap %s)", m.Created.Format("2006-01-02 15:04:05 MST"), m.Bootstrap)
				return r.Up(ctx, sel)
			})
		},
	}
	cmd.Flags().StringVar(&identity, "identity", "", "decrypt with the age identity `FILE` the backup was encrypted to")
	return cmd
}
