package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
	"github.com/platform-bootstrap/bootstrap/stages/consul"
	"github.com/platform-bootstrap/bootstrap/stages/nomad"
	"github.com/platform-bootstrap/bootstrap/stages/vault"
)

func newRotateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rotate",
		Short: "Replace a secret of the running platform without downtime",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "gossip",
		Short: "Replace the Consul and Nomad gossip keys: install, use, remove, with no agent restarted",
		Long: `rotate gossip replaces the gossip encryption keys of Consul (every agent)
and Nomad (the servers) through their keyring APIs: the new key is stored
first, installed on every member, made the primary, and the old key removed;
members keep talking throughout and none restarts. Then it runs up, which
writes the new key into each node's gossip.hcl (the key an agent starts with
the first time) without restarting anything. A run killed anywhere is
finished by running it again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.execute("rotate gossip", func(ctx context.Context, r *stages.Runner, sel stages.Selection, _ *stages.Session) ([]statedir.StageResult, error) {
				for _, rotate := range []func(context.Context, *stages.Env) error{consul.RotateGossip, nomad.RotateGossip} {
					if err := rotate(ctx, r.Env); err != nil {
						return nil, err
					}
				}
				return r.Up(ctx, sel)
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "unseal-keys",
		Short: "Replace Vault's unseal keys (rekey): the old shares open nothing afterwards",
		Long: `rotate unseal-keys rekeys Vault with as many shares and the same threshold:
Vault makes new key shares from the stored ones, bootstrap stores them, and
only then submits them back to activate them (a rekey with verification), so
no run, however it is killed, can leave Vault with keys nobody has. A run
killed before the new keys were stored cancels that rekey the next time; one
killed after carries on with them. Replace any copy of the old keys you keep
outside the state directory, and take a new backup.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.execute("rotate unseal-keys", func(ctx context.Context, r *stages.Runner, _ stages.Selection, _ *stages.Session) ([]statedir.StageResult, error) {
				return nil, vault.Rekey(ctx, r.Env)
			})
		},
	})
	return cmd
}
