package verify

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The pages below are what the real binaries serve, cut down: the checks
// must pass on the applications and fail on the pages a build without them
// serves.
func TestCheckAppTellsTheUIFromItsAbsence(t *testing.T) {
	pages := map[string]string{
		"/grafana/login": `<base href="/grafana/"><script>window.grafanaBootData = {}</script><script nonce="" src="public/build/app.a4e130f2a8cb0149243e.js"></script>`,
		"/grafana/public/build/app.a4e130f2a8cb0149243e.js": "app",
		"/nobuild/login":                       `<base href="/nobuild/"><script>window.grafanaBootData = {}</script>`,
		"/prometheus/query":                    `<title>Prometheus Time Series Collection and Processing Server</title><script type="module" crossorigin src="./assets/index-MKGKlG4_.js"></script>`,
		"/prometheus/assets/index-MKGKlG4_.js": "app",
		"/noreact/query":                       `<title>Prometheus</title>Error opening React index.html`,
		"/ui/":                                 `<meta name="consul-ui/config/environment" content="x"><script src="/ui/assets/init-b7460a439b88b483c51ff7f67c5a5a24.js"></script>`,
		"/ui/assets/init-b7460a439b88b483c51ff7f67c5a5a24.js": "app",
		"/am/":                            `<title>Alertmanager</title><script src="script.js"></script><script>var app = Elm.Main.init({})</script>`,
		"/am/script.js":                   "app",
		"/nomad/ui/":                      `<meta name="nomad-ui/config/environment" content="x"><script src="/ui/assets/nomad-ui-0123abcd.js"></script>`,
		"/ui/assets/nomad-ui-0123abcd.js": "app",
		"/nomad/v1/jobs":                  "[]",
		"/stub/ui/":                       `<html><body><h1>Nomad UI is not available in this binary.</h1></body></html>`,
		"/missing-script/login":           `<script>window.grafanaBootData = {}</script><script src="public/build/app.0123abcd.js"></script>`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(body))
	}))
	defer srv.Close()
	v := &env{http: srv.Client()}
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		run     func() error
		wantErr string
	}{
		{"grafana", func() error { v.grafana = srv.URL + "/grafana"; return checkGrafanaUI(ctx, v) }, ""},
		{"grafana without its frontend", func() error { v.grafana = srv.URL + "/nobuild"; return checkGrafanaUI(ctx, v) }, "none of the application's scripts"},
		{"grafana whose bundle is gone", func() error { v.grafana = srv.URL + "/missing-script"; return checkGrafanaUI(ctx, v) }, "404"},
		{"prometheus", func() error { v.prom = srv.URL + "/prometheus"; return checkPrometheusUI(ctx, v) }, ""},
		{"prometheus without its UI", func() error { v.prom = srv.URL + "/noreact"; return checkPrometheusUI(ctx, v) }, "none of the application's scripts"},
		{"consul", func() error { v.consul = srv.URL; return checkConsulUI(ctx, v) }, ""},
		{"consul without its UI", func() error { v.consul = srv.URL + "/none"; return checkConsulUI(ctx, v) }, "404"},
		{"nomad", func() error { v.nomad = srv.URL + "/nomad"; return checkNomadUI(ctx, v) }, ""},
		{"nomad without its UI", func() error { v.nomad = srv.URL + "/stub"; return checkNomadUI(ctx, v) }, "not the application"},
		{"alertmanager", func() error { v.am = srv.URL + "/am"; return checkAlertmanagerUI(ctx, v) }, ""},
	} {
		err := c.run()
		switch {
		case c.wantErr == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%s: error %v, want one with %q", c.name, err, c.wantErr)
		}
	}
}
