package monitoring

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// DatasourceUID is the uid of the provisioned Prometheus datasource; every
// dashboard panel refers to it.
const DatasourceUID = "prometheus"

// GrafanaDatasources returns Grafana's datasource provisioning file. It
// reads PROMETHEUS_URL and PROMETHEUS_SCRAPE_INTERVAL from the environment
// of the Grafana process (the Nomad job sets them).
func GrafanaDatasources() []byte { return mustRead("grafana/datasources.yml") }

// GrafanaDashboardProvider returns Grafana's dashboard provisioning file. It
// reads the dashboards directory from GRAFANA_DASHBOARDS_DIR.
func GrafanaDashboardProvider() []byte { return mustRead("grafana/dashboards.yml") }

// Dashboards returns the platform's dashboards: file name to JSON.
func Dashboards() map[string][]byte {
	names, err := fs.Glob(files, "grafana/dashboards/*.json")
	if err != nil {
		panic(err) // the pattern is constant
	}
	out := make(map[string][]byte, len(names))
	for _, n := range names {
		out[path.Base(n)] = mustRead(n)
	}
	return out
}

// ReadDashboardsDir reads a user's dashboards (monitoring.dashboards_dir):
// every *.json file of dir, each checked to be a dashboard.
func ReadDashboardsDir(dir string) (map[string][]byte, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("dashboards dir %s: no *.json files", dir)
	}
	out := make(map[string][]byte, len(names))
	var errs []error
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := CheckDashboard(b); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n, err))
			continue
		}
		out[filepath.Base(n)] = b
	}
	return out, errors.Join(errs...)
}

// Dashboard is the part of a Grafana dashboard this package looks at.
type Dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []Panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Datasource *Datasource     `json:"datasource"`
			Query      json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// Panel is a dashboard panel; rows hold their panels when collapsed.
type Panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *Datasource `json:"datasource"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *Datasource `json:"datasource"`
	} `json:"targets"`
	Panels []Panel `json:"panels"`
}

// Datasource is a panel's reference to a datasource.
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// CheckDashboard checks that b is a dashboard Grafana can provision: a JSON
// object with a title, a uid Grafana accepts, and panels with unique ids.
func CheckDashboard(b []byte) error {
	var d Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return fmt.Errorf("not a dashboard: %w", err)
	}
	var errs []error
	if strings.TrimSpace(d.Title) == "" {
		errs = append(errs, errors.New("no title"))
	}
	// Grafana refuses uids longer than 40 characters.
	if len(d.UID) > 40 {
		errs = append(errs, fmt.Errorf("uid %q is longer than 40 characters", d.UID))
	}
	ids := map[int]bool{}
	for _, p := range d.AllPanels() {
		if p.ID != 0 && ids[p.ID] {
			errs = append(errs, fmt.Errorf("panel id %d (%q) is used twice", p.ID, p.Title))
		}
		ids[p.ID] = true
	}
	return errors.Join(errs...)
}

// AllPanels returns the dashboard's panels, with those inside rows.
func (d Dashboard) AllPanels() []Panel {
	var out []Panel
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

func mustRead(name string) []byte {
	b, err := files.ReadFile(name)
	if err != nil {
		panic(err) // embedded at build time
	}
	return b
}
