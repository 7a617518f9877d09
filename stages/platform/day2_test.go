package platform_test

import (
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
)

// TestPlatformDay2 is issue 18's day 2 on a running platform, one journey
// on its own platform: Consul and Nomad start on the patch releases before
// the pins and upgrade node by node, the intermediate CAs rotate, the servers go 3 → 5 → 3 and the clients
// 2 → 4 → 1 → 2, and every token rotates, while dev's application answers
// through its Fabio.
func TestPlatformDay2(t *testing.T) {
	needPlatformJobs(t)
	binDir, upgradeConsulNomad := platformtest.PreviousBinDir(t)
	p := platformtest.NewWithBinDir(t, binDir, "", "")
	// The new files must outlive the subtest: later ups run them.
	upgrade := func() {
		upgradeConsulNomad()
		platformtest.RenewBinary(t, binDir, "vault")
	}
	upgradeJob := func() { platformtest.RenewBinary(t, binDir, "prometheus-node-exporter") }
	p.Up()
	env := p.Env("admin")
	deployWeb(t, p, env, "dev")

	t.Run("consul and nomad upgrade node by node, servers first and the leader last", func(t *testing.T) {
		upgradeAgents(t, p.T(t), upgrade, upgradeJob)
	})
	t.Run("the intermediate CAs rotate with no agent restarted", func(t *testing.T) {
		rotateCAs(t, p.T(t))
	})
	t.Run("servers go 3 → 5 → 3, quorum kept and no agent restarted", func(t *testing.T) {
		scaleServers(t, p.T(t))
	})
	t.Run("clients go 2 → 4 → 1 → 2 while an application answers through Fabio", func(t *testing.T) {
		scaleClients(t, p.T(t))
	})
	t.Run("tokens rotate, and the old ones are refused", func(t *testing.T) {
		rotateTokens(t, p.T(t))
	})
	p.AssertNoSecrets()
}
