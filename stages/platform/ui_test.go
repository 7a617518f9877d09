package platform_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
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
	t.Run("prometheus: every scrape pool with its health, and a query draws a graph", func(t *testing.T) {
		pools := scrapePools(t, env["PROMETHEUS_ADDR"])
		if len(pools) < 5 {
			t.Fatalf("prometheus has %d scrape pools: %v", len(pools), pools)
		}
		// The platform's own pools are all up; consul_sd_metrics also
		// holds the test's applications, which have no /metrics.
		allUp := map[string]bool{}
		for pool, h := range pools {
			allUp[pool] = pool != "consul_sd_metrics"
			if allUp[pool] && h.up != h.all {
				t.Errorf("scrape pool %s: %d / %d up", pool, h.up, h.all)
			}
		}
		if err := b.PrometheusUI(ctx, env["PROMETHEUS_ADDR"], allUp); err != nil {
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
	Health     string            `json:"health"`
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

// poolHealth is how many targets of a scrape pool are up.
type poolHealth struct{ up, all int }

// scrapePools returns the health of each scrape pool of Prometheus's active
// targets.
func scrapePools(t *testing.T, prom string) map[string]poolHealth {
	t.Helper()
	pools := map[string]poolHealth{}
	for _, tg := range activeTargets(t, prom) {
		h := pools[tg.ScrapePool]
		h.all++
		if tg.Health == "up" {
			h.up++
		}
		pools[tg.ScrapePool] = h
	}
	return pools
}
