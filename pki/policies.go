package pki

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/platform-bootstrap/bootstrap/stages"
)

func (r *reconciler) policies(ctx context.Context) error {
	want := r.spec.Policies()
	for _, name := range r.spec.PolicyNames() {
		if err := r.policy(ctx, name, want[name], ""); err != nil {
			return err
		}
	}
	// Nomad's workload policy names the JWT mount's accessor, which exists
	// only once the mount does.
	const detail = "per job read of secret/<namespace>/<job>/*"
	jwt, ok := r.auths[JWTNomadPath+"/"]
	if !ok {
		r.planned("record", "output "+stages.OutVaultJWTNomadAccessor, "")
		r.planned("create", "vault policy "+PolicyNomadWorkloads, detail)
		return nil
	}
	if err := r.output(stages.OutVaultJWTNomadAccessor, jwt.Accessor); err != nil {
		return err
	}
	return r.policy(ctx, PolicyNomadWorkloads, NomadWorkloadsPolicy(jwt.Accessor), detail)
}

func (r *reconciler) policy(ctx context.Context, name, text, detail string) error {
	path := "sys/policies/acl/" + name
	s, err := r.c.Logical().ReadWithContext(ctx, path)
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("read policy %s: %w", name, err)
	}
	write := func() error {
		_, err := r.c.Logical().WriteWithContext(ctx, path, map[string]any{"policy": text})
		return err
	}
	if s == nil {
		return r.change("create", "vault policy "+name, detail, write)
	}
	if strings.TrimSpace(str(s.Data, "policy")) == strings.TrimSpace(text) {
		return nil
	}
	return r.change("update", "vault policy "+name, "rules differ from the configuration", write)
}

// PolicyNames lists the policies Policies returns, in the order they are
// written (nomad-workloads is separate: it needs the JWT mount's accessor).
func (s Spec) PolicyNames() []string {
	names := []string{PolicyConsulTemplateServer, PolicyConsulTemplateClient, PolicyAdmin}
	for _, a := range s.AppRoles {
		names = append(names, AppRolePolicy(a.Name))
	}
	return names
}

// Policies returns the text of every policy but nomad-workloads, by name.
func (s Spec) Policies() map[string]string {
	consulMount, nomadMount := ConsulIntermediateMount, NomadIntermediateMount
	caCerts := rule([]string{"read"}, ConsulRootMount+"/cert/ca", ConsulIntermediateMount+"/cert/ca_chain",
		NomadRootMount+"/cert/ca", NomadIntermediateMount+"/cert/ca_chain")
	clientIssue := rule([]string{"update"},
		IssuePath(consulMount, ConsulRole("client", s.Datacenter)),
		IssuePath(nomadMount, NomadRole("client", s.Region)))
	serverIssue := rule([]string{"update"},
		IssuePath(consulMount, ConsulRole("server", s.Datacenter)),
		IssuePath(nomadMount, NomadRole("server", s.Region)))

	p := map[string]string{
		PolicyConsulTemplateServer: "# consul-template on server nodes: Consul and Nomad server and client\n" +
			"# agent certificates.\n" + serverIssue + clientIssue +
			"# The CA certificates (also readable without a token).\n" + caCerts,
		PolicyConsulTemplateClient: "# consul-template on client nodes: client agent certificates only, so a\n" +
			"# compromised client cannot mint a server certificate.\n" + clientIssue +
			"# The CA certificates (also readable without a token).\n" + caCerts,
		PolicyAdmin: s.adminPolicy(),
	}
	cas := map[string]CA{}
	for _, ca := range s.CAs {
		cas[ca.Name] = ca
	}
	for _, a := range s.AppRoles {
		var b strings.Builder
		fmt.Fprintf(&b, "# AppRole %s: issue from the roles of its CAs only.\n", a.Name)
		for _, name := range a.CAs {
			ca := cas[name]
			var issue, certs []string
			for _, role := range ca.Roles {
				m := ca.RoleMount(role)
				issue = append(issue, IssuePath(m, role.Name), m+"/sign/"+role.Name)
			}
			for _, m := range ca.Mounts() {
				certs = append(certs, m+"/cert/ca", m+"/cert/ca_chain")
			}
			b.WriteString(rule([]string{"update"}, issue...))
			b.WriteString(rule([]string{"read"}, certs...))
		}
		p[AppRolePolicy(a.Name)] = b.String()
	}
	return p
}

func (s Spec) adminPolicy() string {
	all := []string{"create", "read", "update", "delete", "list", "sudo"}
	var b strings.Builder
	b.WriteString("# The administrator: everything bootstrap set up, so the root token can be\n# revoked. Regenerate a root token from the unseal keys for anything else.\n\n")
	b.WriteString("# The secret engines bootstrap mounted.\n")
	var engines []string
	for _, ca := range s.AllCAs() {
		engines = append(engines, ca.Name+"/*")
	}
	engines = append(engines, KVMount+"/*")
	b.WriteString(rule(all, engines...))
	b.WriteString("# Mount, tune and list secret engines and auth methods.\n")
	b.WriteString(rule([]string{"read", "list", "sudo"}, "sys/mounts", "sys/auth"))
	b.WriteString(rule(all, "sys/mounts/*", "sys/auth/*"))
	b.WriteString("# Policies, identities, tokens and auth method configuration.\n")
	b.WriteString(rule([]string{"read", "list"}, "sys/policies/acl", "sys/policy"))
	b.WriteString(rule(all, "sys/policies/acl/*", "sys/policy/*", "auth/*", "identity/*"))
	b.WriteString("# The raft cluster (the vault stage checks its peers) and its snapshots.\n")
	b.WriteString(rule(all, "sys/storage/raft/*"))
	b.WriteString("# Hand the active role to a standby before a rolling restart.\n")
	b.WriteString(rule([]string{"update", "sudo"}, "sys/step-down"))
	b.WriteString("# Leases, audit devices and health.\n")
	b.WriteString(rule(all, "sys/leases/*", "sys/audit", "sys/audit/*"))
	b.WriteString(rule([]string{"read"}, "sys/health"))
	return b.String()
}

// NomadWorkloadsPolicy is the policy `nomad setup vault` creates: a Nomad
// job reads the secrets under secret/<namespace>/<job>/, named from its
// workload identity's claims as mapped by the JWT auth method with the
// given accessor.
func NomadWorkloadsPolicy(accessor string) string {
	meta := "{{identity.entity.aliases." + accessor + ".metadata."
	ns, job := meta+"nomad_namespace}}", meta+"nomad_job_id}}"
	return "# Nomad workloads: each job reads its own secrets.\n" +
		rule([]string{"read"}, "secret/data/"+ns+"/"+job+"/*", "secret/data/"+ns+"/"+job) +
		rule([]string{"list"}, "secret/metadata/"+ns+"/*", "secret/metadata/*") +
		"# Never bootstrap's own tokens in " + KVMount + "/" + KVPrefix + "/, not even for a job in a\n" +
		"# namespace named \"" + KVPrefix + "\": Vault obeys the most specific matching\n" +
		"# path, so the deny names the very same templated path as the read.\n" +
		rule([]string{"deny"}, KVMount+"/data/"+KVPrefix+"/"+job+"/*", KVMount+"/data/"+KVPrefix+"/"+job,
			KVMount+"/metadata/"+KVPrefix+"/*", KVMount+"/metadata/"+KVPrefix)
}

// rule writes one policy stanza per path.
func rule(caps []string, paths ...string) string {
	quoted := make([]string, len(caps))
	for i, c := range caps {
		quoted[i] = strconv.Quote(c)
	}
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "path %q {\n  capabilities = [%s]\n}\n\n", p, strings.Join(quoted, ", "))
	}
	return b.String()
}
