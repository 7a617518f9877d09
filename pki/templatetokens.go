package pki

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/platform-bootstrap/bootstrap/internal/crashpoint"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Every node that runs consul-template has its own Vault token, made from a
// token role of its own that binds the token to the node's addresses
// (token_bound_cidrs): a token copied off a node works nowhere else, and a
// client node's token issues client certificates only (its policy).

// consulTemplateRolePrefix starts the name of every node's token role; the
// rest is the node's name.
const consulTemplateRolePrefix = "consul-template-node-"

// ConsulTemplateTokenRole is the Vault token role of node's consul-template
// token, e.g. "consul-template-node-server-1".
func ConsulTemplateTokenRole(node string) string { return consulTemplateRolePrefix + node }

// ConsulTemplateTokenSecret is where node's consul-template token is kept in
// the secret store (and, under secret/bootstrap/, in Vault KV).
func ConsulTemplateTokenSecret(node string) string { return "vault/tokens/consul-template/" + node }

// ConsulTemplateNodes are the nodes that run consul-template: every Consul
// and Nomad agent, servers and clients.
func ConsulTemplateNodes(inv *inventory.Inventory) []inventory.Node {
	var out []inventory.Node
	for _, n := range inv.Nodes {
		if n.Has(inventory.RoleServer) || n.Has(inventory.RoleClient) {
			out = append(out, n)
		}
	}
	return out
}

// ConsulTemplatePolicy is the policy of n's token: server nodes issue
// server (and client) agent certificates, every other node client ones.
// The Ansible roles choose the server role by the same test.
func ConsulTemplatePolicy(n inventory.Node) string {
	if n.Has(inventory.RoleServer) {
		return PolicyConsulTemplateServer
	}
	return PolicyConsulTemplateClient
}

// ConsulTemplateCIDRs are the addresses n's token is bound to, each a single
// host (/32, /128): the addresses n reaches Vault from. That is its private
// address, or its public one when Vault is reached over the public
// network. Nodes on loopback addresses (the local provider's, or a static
// inventory of loopback machines) share one machine, and Linux sends from
// 127.0.0.1 to every loopback address whatever address the sender is
// given, so their tokens also accept 127.0.0.1: on one machine the binding
// can tell the machine only.
func ConsulTemplateCIDRs(n inventory.Node) []string {
	var addrs []netip.Addr
	add := func(s string) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return
		}
		a = a.Unmap()
		if !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	add(n.PrivateIP)
	add(n.PublicIP)
	if n.Local != nil || slices.ContainsFunc(addrs, netip.Addr.IsLoopback) {
		add("127.0.0.1")
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = netip.PrefixFrom(a, a.BitLen()).String()
	}
	slices.Sort(out)
	return out
}

// sameCIDRs compares address lists as Vault keeps them: it reads back a
// single host without its prefix length ("10.0.0.5" for "10.0.0.5/32").
func sameCIDRs(got, want []string) bool {
	norm := func(l []string) []string {
		out := make([]string, 0, len(l))
		for _, s := range l {
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, p.Masked().String())
			} else if a, err := netip.ParseAddr(s); err == nil {
				a = a.Unmap()
				out = append(out, netip.PrefixFrom(a, a.BitLen()).String())
			} else {
				out = append(out, s)
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.Equal(norm(got), norm(want))
}

// templateNodes returns the nodes of the inventory the provision stage
// recorded that run consul-template. known is false before there is an
// inventory: there is no node to make a token for yet, and none to call
// stale either.
func (r *reconciler) templateNodes() (nodes []inventory.Node, known bool, err error) {
	path := r.e.State.Output(stages.OutInventory)
	if path == "" {
		return nil, false, nil
	}
	inv, err := inventory.LoadSaved(path)
	if err != nil {
		return nil, false, fmt.Errorf("consul-template tokens: %w", err)
	}
	return ConsulTemplateNodes(inv), true, nil
}

func (r *reconciler) consulTemplateTokens(ctx context.Context) error {
	nodes, known, err := r.templateNodes()
	if err != nil {
		return err
	}
	for _, n := range nodes {
		if err := r.nodeTemplateToken(ctx, n); err != nil {
			return err
		}
	}
	if known {
		if err := r.staleTemplateTokens(ctx, nodes); err != nil {
			return err
		}
	}
	return r.sharedTemplateTokens(ctx)
}

// nodeTemplateToken makes sure n has its token role and a live token from
// it in the secret store.
func (r *reconciler) nodeTemplateToken(ctx context.Context, n inventory.Node) error {
	role, policy, cidrs := ConsulTemplateTokenRole(n.Name), ConsulTemplatePolicy(n), ConsulTemplateCIDRs(n)
	desc := fmt.Sprintf("node %s: periodic %s, bound to %s, policy %s", n.Name, fmtDuration(consulTemplatePeriod), strings.Join(cidrs, ","), policy)
	if err := r.templateTokenRole(ctx, role, policy, cidrs, desc); err != nil {
		return err
	}
	secret := ConsulTemplateTokenSecret(n.Name)
	tok, ok, err := r.e.Secrets.Get(secret)
	if err != nil {
		return err
	}
	var live *api.Secret
	if ok {
		if live, err = r.lookupToken(ctx, tok); err != nil {
			return err
		}
	}
	valid := live != nil && str(live.Data, "role") == role && sameCIDRs(strs(live.Data, "bound_cidrs"), cidrs) &&
		slices.Contains(strs(live.Data, "policies"), policy)
	if !valid {
		detail := desc
		if live != nil {
			detail += "; replaces a token made for other addresses or rights"
		}
		old := ""
		if live != nil {
			old = tok
		}
		err := r.change("create", "vault token "+role, detail, func() error {
			s, err := r.c.Logical().WriteWithContext(ctx, "auth/token/create/"+role, map[string]any{
				"policies":     []string{policy},
				"display_name": role,
				"meta":         map[string]string{"node": n.Name},
			})
			if err != nil {
				return err
			}
			if s == nil || s.Auth == nil {
				return errors.New("vault returned no token")
			}
			tok = s.Auth.ClientToken
			crashpoint.Hit("pki/token-created")
			if err := r.e.Secrets.Put(secret, tok); err != nil {
				return err
			}
			// The replaced token is still valid where it was bound; nothing
			// hands it out any more.
			return r.revokeToken(ctx, old)
		})
		if err != nil {
			return err
		}
	}
	return r.kv(ctx, secret, tok, valid || r.plan.Apply)
}

// templateTokenRole makes sure a node's token role exists as wanted. The
// bound addresses are compared as Vault reads them back, the rest as any
// other object.
func (r *reconciler) templateTokenRole(ctx context.Context, role, policy string, cidrs []string, desc string) error {
	path := "auth/token/roles/" + role
	want := fields{
		"allowed_policies":       []string{policy},
		"orphan":                 true,
		"renewable":              true,
		"token_period":           consulTemplatePeriod,
		"token_explicit_max_ttl": time.Duration(0),
	}
	got, err := r.c.Logical().ReadWithContext(ctx, path)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	write := func() error {
		data := writeData(want)
		data["token_bound_cidrs"] = cidrs
		_, err := r.c.Logical().WriteWithContext(ctx, path, data)
		return err
	}
	target := "vault token role " + path
	if got == nil || got.Data == nil {
		return r.change("create", target, desc, write)
	}
	diffs := differences(got.Data, want)
	if g := strs(got.Data, "token_bound_cidrs"); !sameCIDRs(g, cidrs) {
		diffs = append(diffs, fmt.Sprintf("token_bound_cidrs [%s] → [%s]", strings.Join(g, ","), strings.Join(cidrs, ",")))
	}
	if len(diffs) == 0 {
		return nil
	}
	return r.change("update", target, strings.Join(diffs, ", "), write)
}

// lookupToken returns what Vault knows of tok, or nil when tok is not a live
// token. It asks with the reconciler's own token: a node's token is bound
// to the node's addresses and cannot look itself up from here. The GET
// form is a read, so checking tokens writes nothing.
func (r *reconciler) lookupToken(ctx context.Context, tok string) (*api.Secret, error) {
	s, err := r.c.Logical().ReadWithDataWithContext(ctx, "auth/token/lookup", map[string][]string{"token": {tok}})
	if isDenied(err) || isBadToken(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up a stored vault token: %w", err)
	}
	if s == nil || s.Data == nil {
		return nil, nil
	}
	return s, nil
}

// isBadToken reports Vault's answer to a lookup or revocation of a token it
// does not know.
func isBadToken(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == 400 && hasError(err, "bad token")
}

// revokeToken revokes tok (no-op for ""); a token Vault no longer knows is
// already what is wanted.
func (r *reconciler) revokeToken(ctx context.Context, tok string) error {
	if tok == "" {
		return nil
	}
	_, err := r.c.Logical().WriteWithContext(ctx, "auth/token/revoke", map[string]any{"token": tok})
	if err != nil && !isBadToken(err) && !isDenied(err) {
		return fmt.Errorf("revoke a replaced consul-template token: %w", err)
	}
	return nil
}

// forgetToken revokes the token kept as secret, then removes its KV copy
// and the stored secret, in that order: a run killed halfway leaves the
// secret for the next run to finish with.
func (r *reconciler) forgetToken(ctx context.Context, secret string) error {
	tok, ok, err := r.e.Secrets.Get(secret)
	if err != nil || !ok {
		return err
	}
	if err := r.revokeToken(ctx, tok); err != nil {
		return err
	}
	if r.mounted(KVMount) {
		if _, err := r.c.Logical().DeleteWithContext(ctx, KVMetadataPath(secret)); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete %s: %w", KVMetadataPath(secret), err)
		}
	}
	return r.e.Secrets.Delete(secret)
}

// staleTemplateTokens removes the token roles, and revokes the tokens, of
// nodes that are no longer in the inventory.
func (r *reconciler) staleTemplateTokens(ctx context.Context, nodes []inventory.Node) error {
	s, err := r.c.Logical().ListWithContext(ctx, "auth/token/roles")
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("list vault token roles: %w", err)
	}
	if s == nil {
		return nil
	}
	for _, role := range strs(s.Data, "keys") {
		node, ok := strings.CutPrefix(role, consulTemplateRolePrefix)
		if !ok || slices.ContainsFunc(nodes, func(n inventory.Node) bool { return n.Name == node }) {
			continue
		}
		err := r.change("delete", "vault token role auth/token/roles/"+role, "node "+node+" is no longer in the inventory; its token is revoked", func() error {
			if err := r.forgetToken(ctx, ConsulTemplateTokenSecret(node)); err != nil {
				return err
			}
			_, err := r.c.Logical().DeleteWithContext(ctx, "auth/token/roles/"+role)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// sharedTemplateTokens revokes the tokens earlier versions shared between
// all server nodes and all client nodes, and removes their token roles: a
// copy taken from any node would otherwise keep working from anywhere.
func (r *reconciler) sharedTemplateTokens(ctx context.Context) error {
	for _, t := range []struct{ role, secret, holders string }{
		{PolicyConsulTemplateServer, stages.SecretConsulTemplateServerToken, "every server node"},
		{PolicyConsulTemplateClient, stages.SecretConsulTemplateClientToken, "every client node"},
	} {
		_, ok, err := r.e.Secrets.Get(t.secret)
		if err != nil {
			return err
		}
		if ok {
			err := r.change("revoke", "vault token "+t.role, "shared by "+t.holders+"; each node has its own now", func() error {
				return r.forgetToken(ctx, t.secret)
			})
			if err != nil {
				return err
			}
		}
		path := "auth/token/roles/" + t.role
		s, err := r.c.Logical().ReadWithContext(ctx, path)
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if s == nil {
			continue
		}
		err = r.change("delete", "vault token role "+path, "the shared token's role", func() error {
			_, err := r.c.Logical().DeleteWithContext(ctx, path)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// TemplateTokensVar is the secret Ansible variable holding every node's
// consul-template token: an object, node name → token, from which the
// consul_template role takes its node's own. The consul and nomad plays
// both run that role.
const TemplateTokensVar = "consul_template_tokens"

// TemplateTokens returns the consul-template tokens of inv's nodes from the
// secret store, node name → token. The pki stage makes the tokens; until it
// has, it is not ready.
func TemplateTokens(e *stages.Env, inv *inventory.Inventory) (map[string]string, error) {
	m := map[string]string{}
	for _, n := range ConsulTemplateNodes(inv) {
		v, ok, err := e.Secrets.Get(ConsulTemplateTokenSecret(n.Name))
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, stages.NotReadyf("the consul-template token of node %s does not exist yet (pki stage)", n.Name)
		}
		m[n.Name] = strings.TrimSpace(v)
	}
	return m, nil
}
