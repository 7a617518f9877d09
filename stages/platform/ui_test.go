package platform_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/browser"
	"github.com/platform-bootstrap/bootstrap/internal/platformtest"
	"github.com/platform-bootstrap/bootstrap/internal/testcluster"
)

// screenshotDir is where the UI tours leave their screenshots: the test's
// artifacts, kept after the run ($BOOTSTRAP_ARTIFACTS/screenshots, or
// artifacts/screenshots in the repository).
func screenshotDir() string {
	dir := os.Getenv("BOOTSTRAP_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(testcluster.RepoRoot(), "artifacts")
	}
	return filepath.Join(dir, "screenshots")
}

// webUIs opens every UI `up` prints in headless Chromium, signs in with the
// identities up made, and checks what the pages render. app is a job the
// test deployed into dev.
func webUIs(t *testing.T, p *platformtest.Platform, app string) {
	if _, err := browser.ExecPath(); err != nil {
		if os.Getenv("BOOTSTRAP_REQUIRE_TOOLS") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ui := p.Env("ui")
	env := p.Env("admin")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b, err := browser.Start(ctx, ui["NOMAD_CACERT"], ui["CONSUL_CACERT"])
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.Dir = screenshotDir()
	t.Logf("screenshots: %s", b.Dir)

	t.Run("nomad: the read-only token sees the platform jobs and dev's application", func(t *testing.T) {
		jobs := map[string][]string{"general": {"prometheus", "grafana", "fabio", "node-exporter"}, "dev": {app}}
		if err := b.NomadUI(ctx, ui["NOMAD_ADDR"], ui["NOMAD_TOKEN"], jobs); err != nil {
			t.Error(err)
		}
	})
	t.Run("consul: the read-only token sees the platform services", func(t *testing.T) {
		services := []string{"prometheus", "grafana", "alertmanager", "fabio", "node-exporter", "nomad", "consul"}
		if err := b.ConsulUI(ctx, ui["CONSUL_HTTP_ADDR"], ui["CONSUL_HTTP_TOKEN"], services); err != nil {
			t.Error(err)
		}
	})
	t.Run("grafana: every dashboard renders and node CPU has data", func(t *testing.T) {
		pw, err := os.ReadFile(filepath.Join(p.StateDir(), "secrets", "grafana", "admin-password"))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.GrafanaUI(ctx, env["GRAFANA_ADDR"], string(pw), "CPU busy"); err != nil {
			t.Error(err)
		}
	})
	t.Run("prometheus: every scrape pool up, and a query draws a graph", func(t *testing.T) {
		pools := scrapePools(t, env["PROMETHEUS_ADDR"])
		if len(pools) < 5 {
			t.Fatalf("prometheus has %d scrape pools: %v", len(pools), pools)
		}
		if err := b.PrometheusUI(ctx, env["PROMETHEUS_ADDR"], pools); err != nil {
			t.Error(err)
		}
	})
	t.Run("alertmanager: the alerts page", func(t *testing.T) {
		if err := b.AlertmanagerUI(ctx, env["ALERTMANAGER_ADDR"]); err != nil {
			t.Error(err)
		}
	})
	t.Run("fabio: the routing table lists the platform's routes", func(t *testing.T) {
		if err := b.FabioUI(ctx, env["FABIO_UI_ADDR"], []string{"/prometheus", "/grafana", "/alertmanager"}); err != nil {
			t.Error(err)
		}
	})
}

// activeTarget is one of Prometheus's active targets.
type activeTarget struct {
	Labels     map[string]string `json:"labels"`
	ScrapeURL  string            `json:"scrapeUrl"`
	ScrapePool string            `json:"scrapePool"`
}

func activeTargets(t *testing.T, prom string) []activeTarget {
	t.Helper()
	resp, err := http.Get(prom + "/api/v1/targets?state=active")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var targets struct {
		Data struct {
			ActiveTargets []activeTarget `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&targets); err != nil {
		t.Fatal(err)
	}
	return targets.Data.ActiveTargets
}

// scrapePools returns the scrape pools of Prometheus's active targets.
func scrapePools(t *testing.T, prom string) []string {
	t.Helper()
	seen := map[string]bool{}
	var pools []string
	for _, tg := range activeTargets(t, prom) {
		if !seen[tg.ScrapePool] {
			seen[tg.ScrapePool] = true
			pools = append(pools, tg.ScrapePool)
		}
	}
	sort.Strings(pools)
	return pools
}
