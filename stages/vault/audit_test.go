package vault

import (
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
)

// The audit log goes where each kind of node keeps its logs: one
// cluster-wide file_path, one file per node.
func TestAuditFile(t *testing.T) {
	for _, tc := range []struct {
		provider string
		node     inventory.Node
		want     string
	}{
		{`provider "local" {}`, inventory.Node{Local: &inventory.Local{Root: "/tmp/n1"}}, "logs/vault/audit.log"},
		{"provider \"static\" {\n  inventory = \"i.json\"\n}\n", inventory.Node{}, "/var/log/vault/audit.log"},
		{"provider \"static\" {\n  inventory = \"i.json\"\n  service_manager = \"process\"\n}\n", inventory.Node{}, "logs/vault/audit.log"},
	} {
		e := testEnv(t, t.TempDir(), tc.provider)
		opts := auditOptions(e, []inventory.Node{tc.node})
		if opts["file_path"] != tc.want || opts["mode"] != "0600" || len(opts) != 2 {
			t.Errorf("%s: audit options %v, want file_path %s mode 0600", tc.provider, opts, tc.want)
		}
	}
}
