package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Each tour below visits one UI as a person would after `up`: sign in with
// the identity `up` made for it, open the pages that matter and check what
// they render. Every tour leaves screenshots named after its pages, taken
// also when a check fails: the failing page is the one worth seeing.

// visit runs a tour in a fresh tab.
func (b *Browser) visit(ctx context.Context, tour func(p *Page) error) error {
	p, err := b.NewPage()
	if err != nil {
		return err
	}
	defer p.Close()
	return tour(p)
}

// shot takes a screenshot; a check's error comes first. It has its own
// time: the step before may have used up ctx's.
func shot(ctx context.Context, p *Page, name string, err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, serr := p.Screenshot(ctx, name); serr != nil && err == nil {
		return serr
	}
	return err
}

// NomadUI signs in with token (the read-only UI token), checks the jobs
// list shows every job of jobs (namespace → job IDs) and that a job's page
// lists its allocations.
func (b *Browser) NomadUI(ctx context.Context, addr, token string, jobs map[string][]string) error {
	return b.visit(ctx, func(p *Page) error {
		// A browser with no token is signed in as the anonymous token:
		// sign out of it first.
		err := p.Open(ctx, addr+"/ui/settings/tokens")
		signOut := `Array.from(document.querySelectorAll("button")).some(b => b.innerText.trim() === "Sign Out")`
		if err == nil {
			// The app renders once its first API calls answer: right after
			// the rolling upgrade, under the lab's load, CI saw the page still
			// blank after 90 s (2026-12-05). A page that never renders still
			// fails.
			err = p.WaitFor(ctx, "the token form or the signed-in token", `document.querySelector("#token-input") || `+signOut, 2*stepTimeout)
		}
		var signedIn bool
		if err == nil {
			err = p.Eval(ctx, signOut, &signedIn)
		}
		if err == nil && signedIn {
			err = p.ClickText(ctx, "Sign Out")
		}
		if err == nil {
			err = p.Type(ctx, "#token-input", token)
		}
		if err == nil {
			err = p.ClickText(ctx, "Sign in with secret")
		}
		if err == nil {
			err = p.WaitText(ctx, stepTimeout, "Token Authenticated!", "ui-read")
		}
		if err := shot(ctx, p, "nomad-signed-in", err); err != nil {
			return fmt.Errorf("nomad UI sign-in: %w", err)
		}
		var all []string
		for _, ids := range jobs {
			all = append(all, ids...)
		}
		err = p.Open(ctx, addr+"/ui/jobs?namespace=*")
		if err == nil {
			err = p.WaitText(ctx, stepTimeout, all...)
		}
		if err := shot(ctx, p, "nomad-jobs", err); err != nil {
			return fmt.Errorf("nomad UI jobs list: %w", err)
		}
		for ns, ids := range jobs {
			if len(ids) == 0 {
				continue
			}
			u := fmt.Sprintf("%s/ui/jobs/%s@%s/allocations", addr, url.PathEscape(ids[0]), url.PathEscape(ns))
			err = p.Open(ctx, u)
			if err == nil {
				err = p.WaitFor(ctx, "a running allocation", `Array.from(document.querySelectorAll("table tbody tr")).some(r => /running/i.test(r.innerText))`, stepTimeout)
			}
			if err := shot(ctx, p, "nomad-job-"+ns+"-"+ids[0], err); err != nil {
				return fmt.Errorf("nomad UI job %s in %s: %w", ids[0], ns, err)
			}
		}
		return nil
	})
}

// ConsulUI logs in with token and checks the services list shows services.
func (b *Browser) ConsulUI(ctx context.Context, addr, token string, services []string) error {
	return b.visit(ctx, func(p *Page) error {
		err := p.Open(ctx, addr+"/ui/")
		if err == nil {
			err = p.ClickText(ctx, "Log in")
		}
		if err == nil {
			err = p.Type(ctx, `input[name="auth[SecretID]"]`, token)
		}
		if err == nil {
			err = p.Click(ctx, `form button[type="submit"]`)
		}
		if err == nil {
			err = p.WaitFor(ctx, "signed in", `!document.querySelector('input[name="auth[SecretID]"]') || document.querySelector('input[name="auth[SecretID]"]').offsetParent === null`, stepTimeout)
		}
		// The list loaded before the login is the anonymous token's: load
		// it again with the token the UI now keeps.
		if err == nil {
			err = p.Open(ctx, addr+"/ui/dc1/services")
		}
		if err == nil {
			err = p.WaitText(ctx, stepTimeout, services...)
		}
		if err := shot(ctx, p, "consul-services", err); err != nil {
			return fmt.Errorf("consul UI services: %w", err)
		}
		return nil
	})
}

// GrafanaUI logs in as admin, then opens every dashboard the search lists:
// each must render its panels with none in error. The panel titled
// dataPanel must draw a series.
func (b *Browser) GrafanaUI(ctx context.Context, addr, password, dataPanel string) error {
	return b.visit(ctx, func(p *Page) error {
		err := p.Open(ctx, addr+"/login")
		if err == nil {
			err = p.Type(ctx, `input[name="user"]`, "admin")
		}
		if err == nil {
			err = p.Type(ctx, `input[name="password"]`, password)
		}
		if err == nil {
			err = p.Click(ctx, `button[type="submit"]`)
		}
		if err == nil {
			err = p.WaitFor(ctx, "the home page after login", `!location.pathname.endsWith("/login") && document.body.innerText.includes("Dashboards")`, stepTimeout)
		}
		if err := shot(ctx, p, "grafana-home", err); err != nil {
			return fmt.Errorf("grafana login: %w", err)
		}
		// The dashboards as the signed-in browser sees them.
		var dashboards []struct {
			UID   string `json:"uid"`
			Title string `json:"title"`
			URL   string `json:"url"`
		}
		if err := p.Eval(ctx, `fetch(window.grafanaBootData.settings.appSubUrl + "/api/search?type=dash-db").then(r => r.json())`, &dashboards); err != nil {
			return fmt.Errorf("grafana dashboards: %w", err)
		}
		if len(dashboards) == 0 {
			return fmt.Errorf("grafana lists no dashboards")
		}
		// The search's URLs carry Grafana's sub path (/grafana/d/…).
		origin, err := url.Parse(addr)
		if err != nil {
			return err
		}
		origin.Path = ""
		drew := false
		for _, d := range dashboards {
			err := p.Open(ctx, origin.String()+d.URL)
			if err == nil {
				err = p.WaitFor(ctx, "the dashboard's panels", `document.querySelectorAll("[data-viz-panel-key], .react-grid-item").length > 0`, stepTimeout)
			}
			if err == nil {
				err = renderAllPanels(ctx, p)
			}
			if err == nil {
				err = panelErrors(ctx, p)
			}
			if err == nil && dataPanel != "" {
				ok, derr := panelDrawn(ctx, p, dataPanel)
				if derr != nil {
					err = derr
				}
				drew = drew || ok
			}
			if err := shot(ctx, p, "grafana-"+slug(d.Title), err); err != nil {
				return fmt.Errorf("grafana dashboard %q: %w", d.Title, err)
			}
		}
		if dataPanel != "" && !drew {
			return fmt.Errorf("no dashboard has a panel %q with data", dataPanel)
		}
		return nil
	})
}

// renderAllPanels scrolls through the dashboard: Grafana renders (and
// queries) a panel only once it is in view. At each screen it waits until
// no panel is loading, and it ends back at the top.
func renderAllPanels(ctx context.Context, p *Page) error {
	const loaded = `document.querySelectorAll('[aria-label="Panel loading bar"]').length === 0`
	for range 30 {
		if err := p.WaitFor(ctx, "the panels' queries", loaded, stepTimeout); err != nil {
			return err
		}
		var bottom bool
		if err := p.Eval(ctx, `(() => {
		  const s = Array.from(document.querySelectorAll(".scrollbar-view")).find(e => e.scrollHeight > e.clientHeight) || document.scrollingElement;
		  const before = s.scrollTop;
		  s.scrollTop += Math.floor(s.clientHeight * 0.8);
		  return s.scrollTop === before;
		})()`, &bottom); err != nil {
			return err
		}
		if bottom {
			break
		}
		// The panels that came into view start loading after a frame.
		time.Sleep(500 * time.Millisecond)
	}
	return p.Eval(ctx, `(Array.from(document.querySelectorAll(".scrollbar-view")).forEach(e => e.scrollTop = 0), true)`, nil)
}

// panelErrors fails when a panel shows an error or a plugin failed to load.
func panelErrors(ctx context.Context, p *Page) error {
	var errs []string
	err := p.Eval(ctx, `Array.from(document.querySelectorAll(
	  '[data-testid="data-testid Panel status error"], [aria-label="Panel status"], .panel-info-corner--error, [data-testid="data-testid Panel data error message"]'
	)).map(e => {
	  const panel = e.closest("[data-panelid], .react-grid-item");
	  const title = panel && panel.querySelector("h2, h6, .panel-title");
	  return (title ? title.innerText + ": " : "") + (e.getAttribute("aria-label") || e.innerText || "error");
	})`, &errs)
	if err != nil {
		return err
	}
	var text string
	p.Eval(ctx, `document.body.innerText`, &text)
	for _, bad := range []string{"Panel plugin not found", "Failed to load", "Datasource named", "was not found"} {
		if strings.Contains(text, bad) {
			errs = append(errs, bad)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("panels in error: %s", strings.Join(errs, "; "))
	}
	return nil
}

// panelDrawn tells whether the panel titled title is on the page, and then
// that it drew a series: a legend entry and no "No data".
func panelDrawn(ctx context.Context, p *Page, title string) (bool, error) {
	q, _ := json.Marshal(title)
	var res struct {
		Found  bool `json:"found"`
		NoData bool `json:"noData"`
		Series int  `json:"series"`
	}
	err := p.Eval(ctx, fmt.Sprintf(`(() => {
	  const t = Array.from(document.querySelectorAll("h2, h6")).find(h => h.innerText.trim() === %s);
	  if (!t) return {found: false, noData: false, series: 0};
	  const panel = t.closest("section, .react-grid-item");
	  return {
	    found: true,
	    noData: panel.innerText.includes("No data"),
	    series: panel.querySelectorAll("canvas").length && panel.querySelectorAll('[class*="LegendLabel"], [aria-label^="VizLegend series"], .u-series').length,
	  };
	})()`, q), &res)
	if err != nil || !res.Found {
		return false, err
	}
	if res.NoData || res.Series == 0 {
		return false, fmt.Errorf("panel %q draws no data", title)
	}
	return true, nil
}

// PrometheusUI checks the targets page lists each scrape pool of pools
// with its health ("3 / 3 up"); a pool mapped to true must show every
// target up. Then a query must draw a graph.
func (b *Browser) PrometheusUI(ctx context.Context, addr string, pools map[string]bool) error {
	return b.visit(ctx, func(p *Page) error {
		err := p.Open(ctx, addr+"/targets")
		if err == nil {
			err = p.WaitText(ctx, stepTimeout, " up")
		}
		for pool, allUp := range pools {
			if err != nil {
				break
			}
			// A pool's header: its name, "Show config", then the health.
			re, _ := json.Marshal(`(?:^|\s)` + regexp.QuoteMeta(pool) + `\s+Show config\s+(\d+) / (\d+) up`)
			want := "its health"
			cond := "m !== null"
			if allUp {
				want, cond = "every target up", "m !== null && m[1] === m[2]"
			}
			err = p.WaitFor(ctx, fmt.Sprintf("scrape pool %s with %s", pool, want),
				fmt.Sprintf("(m => %s)(document.body.innerText.match(new RegExp(%s)))", cond, re), stepTimeout)
		}
		if err := shot(ctx, p, "prometheus-targets", err); err != nil {
			return fmt.Errorf("prometheus UI targets: %w", err)
		}
		q := url.Values{"g0.expr": {"rate(node_cpu_seconds_total{mode!=\"idle\"}[1m])"}, "g0.tab": {"graph"}, "g0.range_input": {"15m"}}
		err = p.Open(ctx, addr+"/query?"+q.Encode())
		if err == nil {
			err = p.WaitFor(ctx, "a graph", `document.querySelectorAll(".uplot canvas").length > 0`, stepTimeout)
		}
		if err == nil && strings.Contains(p.Text(ctx), "Error") {
			err = fmt.Errorf("the query page shows an error: %s", p.shows(ctx))
		}
		if err := shot(ctx, p, "prometheus-graph", err); err != nil {
			return fmt.Errorf("prometheus UI graph: %w", err)
		}
		return nil
	})
}

// AlertmanagerUI checks Alertmanager's page renders its alert list.
func (b *Browser) AlertmanagerUI(ctx context.Context, addr string) error {
	return b.visit(ctx, func(p *Page) error {
		err := p.Open(ctx, addr+"/#/alerts")
		if err == nil {
			err = p.WaitText(ctx, stepTimeout, "Alertmanager", "Silences")
		}
		if err := shot(ctx, p, "alertmanager", err); err != nil {
			return fmt.Errorf("alertmanager UI: %w", err)
		}
		return nil
	})
}

// FabioUI checks Fabio's routes page lists every route prefix.
func (b *Browser) FabioUI(ctx context.Context, addr string, routes []string) error {
	return b.visit(ctx, func(p *Page) error {
		err := p.Open(ctx, addr+"/routes")
		if err == nil {
			err = p.WaitText(ctx, stepTimeout, routes...)
		}
		if err := shot(ctx, p, "fabio-routes", err); err != nil {
			return fmt.Errorf("fabio UI routes: %w", err)
		}
		return nil
	})
}

func slug(s string) string {
	return strings.Trim(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '-'
	}, s), "-")
}
