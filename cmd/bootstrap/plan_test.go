package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// TestFirstPlanListsKnownChanges runs the binary's `plan` on an empty state
// directory: the stages that wait for earlier ones still list what the
// configuration tells they will do, marked as known after earlier stages,
// the way Terraform shows "(known after apply)".
func TestFirstPlanListsKnownChanges(t *testing.T) {
	cfg := minimalConfig(t)
	state := filepath.Join(t.TempDir(), "state")
	r := runIn(t, filepath.Dir(cfg), nil, "plan", "-c", cfg, "--state-dir", state, "--output", "json")
	if r.code != exitChanges {
		t.Fatalf("plan exited %d, want %d (changes pending)\nstdout:\n%s\nstderr:\n%s", r.code, exitChanges, r.stdout, r.stderr)
	}
	type stage struct {
		outcome string
		targets []string
	}
	got := map[string]*stage{}
	for _, ev := range checkJSONLines(t, r.stdout) {
		if ev["type"] != string(stages.EventStageEnd) {
			continue
		}
		name, _ := ev["stage"].(string)
		s := &stage{}
		s.outcome, _ = ev["outcome"].(string)
		changes, _ := ev["changes"].([]any)
		for _, c := range changes {
			m, _ := c.(map[string]any)
			action, _ := m["action"].(string)
			target, _ := m["target"].(string)
			detail, _ := m["detail"].(string)
			if s.outcome == string(statedir.OutcomeNotReady) && !strings.Contains(detail, stages.KnownDetail) {
				t.Errorf("%s: waiting stage's change %s %s is not marked %q (detail %q)", name, action, target, stages.KnownDetail, detail)
			}
			s.targets = append(s.targets, action+" "+target)
		}
		got[name] = s
	}
	// The minimal configuration: the local provider's three servers and
	// two clients, Vault on the first server, namespaces dev and prod, the
	// four platform jobs.
	want := map[string][]string{
		"vault":  {"install vault on server-1", "init vault", "unseal vault on server-1"},
		"pki":    {"create vault mount consul/root-ca", "create vault mount nomad/root-ca", "create vault role consul/inter-ca/roles/server-dc1"},
		"consul": {"install consul on server-1, server-2, server-3, client-1, client-2", "bootstrap consul ACLs", "create consul token nomad-agent"},
		"nomad":  {"install nomad on server-1, server-2, server-3, client-1, client-2", "bootstrap nomad ACLs", "create nomad namespace dev", "create nomad namespace prod", "create nomad token ci-dev", "create nomad token ci-prod"},
		"jobs":   {"create job general/fabio", "create job general/prometheus", "create job general/grafana", "create job general/node-exporter"},
		"verify": {"check the nomad UI answers the read-only token"},
	}
	for name, targets := range want {
		s := got[name]
		if s == nil {
			t.Errorf("no stage_end for %s:\n%s", name, r.stdout)
			continue
		}
		if s.outcome != string(statedir.OutcomeNotReady) {
			t.Errorf("%s: outcome %q, want %q", name, s.outcome, statedir.OutcomeNotReady)
		}
		for _, w := range targets {
			found := false
			for _, g := range s.targets {
				found = found || g == w
			}
			if !found {
				t.Errorf("%s does not list %q; it lists %q", name, w, s.targets)
			}
		}
	}
	if k := got["keys"]; k == nil || k.outcome != string(statedir.OutcomePlanned) {
		t.Errorf("keys: %+v, want planned", k)
	}

	// The plain output shows them under each waiting stage.
	r = runIn(t, filepath.Dir(cfg), nil, "plan", "-c", cfg, "--state-dir", state, "--output", "plain")
	if r.code != exitChanges || !strings.Contains(r.stdout, "[nomad]   + create nomad namespace prod ("+stages.KnownDetail+")") {
		t.Errorf("plain plan (exit %d) does not list nomad's known namespace:\n%s", r.code, r.stdout)
	}
}
