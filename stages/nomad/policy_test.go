package nomad

import (
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/config"
)

// Each deploy token reaches its own namespace and nothing else: no other
// namespace, no host volume, no node, agent or ACL rule.
func TestDeployPoliciesStayInTheirNamespace(t *testing.T) {
	cfg := config.Defaults()
	pols := Policies(cfg)
	toks := map[string]token{}
	for _, tk := range tokens(cfg) {
		toks[tk.name] = tk
	}
	for _, ns := range []string{"dev", "prod"} {
		rules, ok := pols[DeployPolicy(ns)]
		if !ok {
			t.Fatalf("no deploy policy for %s", ns)
		}
		if strings.Count(rules, "namespace ") != 1 || !strings.Contains(rules, `namespace "`+ns+`"`) {
			t.Errorf("%s's deploy policy names other namespaces:\n%s", ns, rules)
		}
		for _, bad := range []string{"host_volume", "node", "agent", "operator", "acl", "alloc-exec", "alloc-node-exec", "write", "sentinel"} {
			if strings.Contains(rules, bad) {
				t.Errorf("%s's deploy policy grants %q:\n%s", ns, bad, rules)
			}
		}
		tk, ok := toks["ci-"+ns]
		if !ok || len(tk.policies) != 1 || tk.policies[0] != DeployPolicy(ns) {
			t.Errorf("token ci-%s: %+v", ns, tk)
		}
	}
	for name, rules := range pols {
		if strings.Contains(rules, "host_volume") {
			t.Errorf("policy %s grants a host volume", name)
		}
	}
}

// Application namespaces may only use isolating drivers; general is not
// restricted (it runs the platform's raw_exec jobs on the local provider).
func TestNamespaceDrivers(t *testing.T) {
	cfg := config.Defaults()
	ns := namespaces(cfg)
	for _, app := range cfg.Nomad.Namespaces {
		got := ns[app].api(app).Capabilities
		if got == nil || strings.Join(got.EnabledTaskDrivers, ",") != "docker,exec" {
			t.Errorf("namespace %s: capabilities %+v", app, got)
		}
	}
	if c := ns[config.GeneralNamespace].api(config.GeneralNamespace).Capabilities; c != nil {
		t.Errorf("general is restricted: %+v", c)
	}
	// A namespace whose drivers were widened by hand is drift.
	have := ns["dev"].api("dev")
	have.Capabilities.EnabledTaskDrivers = append(have.Capabilities.EnabledTaskDrivers, "raw_exec")
	if ns["dev"].differs(have) == "" {
		t.Error("raw_exec added to dev is not seen as drift")
	}
}
