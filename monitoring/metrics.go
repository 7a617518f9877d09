package monitoring

import (
	"encoding/json"
	"regexp"
	"strings"
)

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promBraces   = regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promNumbers  = regexp.MustCompile(`(^|[^a-zA-Z0-9_:])[0-9][0-9a-zA-Z_.]*`) // 3, 0.9, 1e3, 5m
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true}
	ruleExpr     = regexp.MustCompile(`(?m)^\s+expr: (.*)$`)
)

// MetricNames returns the metric names a PromQL expression selects by name
// (not those matched by a regular expression on __name__). It is a lexical
// scan, good for the expressions of this package.
func MetricNames(expr string) []string {
	e := promStrings.ReplaceAllString(expr, `""`)
	e = promBraces.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	e = promNumbers.ReplaceAllString(e, "$1 ")
	var names []string
	for _, m := range promIdent.FindAllString(e, -1) {
		if strings.HasSuffix(m, "(") || promKeywords[m] {
			continue // a function, an aggregation or an operator
		}
		names = append(names, m)
	}
	return names
}

// UsedMetrics returns every metric name the dashboards and alert rules
// select, each with a place it is used ("nodes.yml", "platform-nomad.json:
// CPU by job"): what Prometheus must scrape for them to show anything.
func UsedMetrics() (map[string]string, error) {
	used := map[string]string{}
	for name, b := range Dashboards() {
		var d Dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, err
		}
		for _, p := range d.AllPanels() {
			for _, tg := range p.Targets {
				for _, n := range MetricNames(tg.Expr) {
					used[n] = name + ": " + p.Title
				}
			}
		}
	}
	rules, err := RenderRules(RulesConfig{})
	if err != nil {
		return nil, err
	}
	for name, b := range rules {
		for _, m := range ruleExpr.FindAllStringSubmatch(string(b), -1) {
			for _, n := range MetricNames(m[1]) {
				used[n] = name
			}
		}
	}
	return used, nil
}
