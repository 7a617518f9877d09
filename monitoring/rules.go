package monitoring

import (
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// RulesConfig holds the thresholds of the alert rules.
type RulesConfig struct {
	// CertExpiry: alert when a certificate has less than this left
	// (default 72h). Use CertExpiryFor(leafTTL) for leaves shorter than that.
	CertExpiry time.Duration
	// Percentages of CPU, memory and disk use that alert after 10 minutes
	// (default 90).
	CPUPercent, MemoryPercent, DiskPercent int
}

// CertExpiryFor returns the expiry threshold for leaves issued with leafTTL:
// 3 days, or 5% of the lifetime when that is shorter. consul-template
// renews a certificate at about 90% of its life (±3%), so a certificate with
// 5% left was not renewed; a fixed 3 days would fire for every 24h leaf.
func CertExpiryFor(leafTTL time.Duration) time.Duration {
	const max = 72 * time.Hour
	if t := leafTTL / 20; t < max {
		return t
	}
	return max
}

// RenderRules renders every alert rule file: file name (e.g. "nomad.yml")
// to content. Prometheus loads them with rule_files: [rules/*.yml].
func RenderRules(c RulesConfig) (map[string][]byte, error) {
	if c.CertExpiry == 0 {
		c.CertExpiry = 72 * time.Hour
	}
	if c.CertExpiry < time.Second {
		return nil, fmt.Errorf("alert rules: certificate expiry threshold %s is shorter than a second", c.CertExpiry)
	}
	for _, p := range []*int{&c.CPUPercent, &c.MemoryPercent, &c.DiskPercent} {
		if *p == 0 {
			*p = 90
		}
		if *p < 1 || *p > 100 {
			return nil, fmt.Errorf("alert rules: threshold %d%% is not between 1 and 100", *p)
		}
	}
	data := struct {
		RulesConfig
		CertExpirySeconds, CertExpiryText string
	}{c, strconv.FormatInt(int64(c.CertExpiry/time.Second), 10), shortDuration(c.CertExpiry)}

	names, err := fs.Glob(files, "rules/*.yml")
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(names))
	for _, name := range names {
		// Prometheus annotations use {{ }} themselves.
		t, err := template.New(path.Base(name)).Delims("[[", "]]").Option("missingkey=error").
			Funcs(template.FuncMap{"sub": func(a, b int) int { return a - b }}).ParseFS(files, name)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, data); err != nil {
			return nil, fmt.Errorf("render %s: %w", name, err)
		}
		out[path.Base(name)] = buf.Bytes()
	}
	return out, nil
}

// shortDuration prints d without zero units: 72h, 1h12m, 90s.
func shortDuration(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
