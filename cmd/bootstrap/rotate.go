package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

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
		Use:       "tokens [KIND...]",
		Short:     "Replace the platform's Consul and Nomad tokens: management, ui, metrics, ci",
		ValidArgs: stages.TokenKinds(),
		Long: `rotate tokens replaces the Consul and Nomad tokens of the given kinds (all
when none is given) and revokes the old ones:

  management  the Consul and Nomad management tokens (bootstrap env --token admin)
  ui          the read-only UI tokens (bootstrap env --token ui)
  metrics     Prometheus's Consul and Nomad tokens
  ci          the Nomad deploy token of each application namespace

Each old token is renamed "bootstrap (retired): NAME" and keeps working while
up makes the new one, stores it (state directory and Vault KV) and restarts
the platform jobs that use it; the old tokens are deleted at the end of up,
once the jobs run with the new ones. A run killed anywhere is finished by
running it again (or up). After a ci rotation, put the new deploy tokens in
GitLab's CI variables: bootstrap env --token ci-NAMESPACE prints them.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, k := range args {
				if !slices.Contains(stages.TokenKinds(), k) {
					return &exitError{code: exitUsage, err: fmt.Errorf("rotate tokens: no tokens of kind %q: use %s, or none for all", k, strings.Join(stages.TokenKinds(), ", "))}
				}
			}
			return g.execute("rotate tokens", func(ctx context.Context, r *stages.Runner, sel stages.Selection, _ *stages.Session) ([]statedir.StageResult, error) {
				toks, err := stages.RequestTokenRotation(r.Env.State, r.Env.Config, args)
				if err != nil {
					return nil, err
				}
				for _, t := range toks {
					r.Env.Step("rotating %s token %s", t.Stage, t.Name)
				}
				return r.Up(ctx, sel)
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:       "ca [consul|nomad]...",
		Short:     "Replace the Consul and Nomad intermediate CAs; every agent gets a certificate of the new one",
		ValidArgs: stages.RotatableCAs(),
		Long: `rotate ca makes a new intermediate CA under the same root for Consul and for
Nomad (or only those named) and makes it the one that issues. up then
restarts every node's consul-template, which issues the agent a certificate
of the new CA and reloads the agent (no agent restarts). Once every agent
serves a certificate of the new CA, the old intermediate is revoked at the
root and deleted with its key. Everything trusts the root, so agents with
certificates of either CA keep talking throughout. A run killed anywhere is
finished by running it again (or up).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, ca := range args {
				if !slices.Contains(stages.RotatableCAs(), ca) {
					return &exitError{code: exitUsage, err: fmt.Errorf("rotate ca: no CA %q: use %s, or none for both", ca, strings.Join(stages.RotatableCAs(), ", "))}
				}
			}
			return g.execute("rotate ca", func(ctx context.Context, r *stages.Runner, sel stages.Selection, _ *stages.Session) ([]statedir.StageResult, error) {
				if err := stages.RequestCARotation(r.Env.State, args); err != nil {
					return nil, err
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
