package nomadjob

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
)

func TestFormatDiff(t *testing.T) {
	d := &nomadapi.JobDiff{
		Type: "Edited", ID: "web",
		Fields: []*nomadapi.FieldDiff{{Type: "Edited", Name: "Meta[commit]", Old: "a", New: "b"}, {Type: "None", Name: "Priority", Old: "50", New: "50"}},
		TaskGroups: []*nomadapi.TaskGroupDiff{
			{Type: "Edited", Name: "g", Updates: map[string]uint64{"canary": 1, "ignore": 1, "create": 0},
				Tasks: []*nomadapi.TaskDiff{{Type: "Edited", Name: "t", Annotations: []string{"forces create/destroy update"},
					Objects: []*nomadapi.ObjectDiff{{Type: "Edited", Name: "Config", Fields: []*nomadapi.FieldDiff{
						{Type: "Added", Name: "args[1]", New: "x"}, {Type: "Deleted", Name: "args[2]", Old: "y"}}}}}}},
			{Type: "Added", Name: "new", Updates: map[string]uint64{"create": 2},
				Fields: []*nomadapi.FieldDiff{{Type: "Added", Name: "Count", New: "2"}},
				Tasks:  []*nomadapi.TaskDiff{{Type: "Added", Name: "n", Fields: []*nomadapi.FieldDiff{{Type: "Added", Name: "Driver", New: "docker"}}}}},
			{Type: "None", Name: "same"},
		},
	}
	want := `+/- Job: "web"
  +/- Meta[commit]: "a" => "b"
+/- Task Group: "g" (1 canary, 1 ignore)
  +/- Task: "t" (forces create/destroy update)
    +/- Config {
      + args[1]: "x"
      - args[2]: "y"
    }
+ Task Group: "new" (2 create)
  + Task: "n"`
	if got := FormatDiff(d); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if got := FormatDiff(&nomadapi.JobDiff{Type: "None"}); got != "no changes" {
		t.Errorf("no diff: %q", got)
	}
	if got, want := Summary(d), "Meta[commit]; group g (t); group new (n)"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
	if got := Summary(&nomadapi.JobDiff{Type: "Added"}); got != "new job" {
		t.Errorf("summary of a new job: %q", got)
	}
	plan := &nomadapi.JobPlanResponse{Diff: &nomadapi.JobDiff{Type: "None"}}
	if Changed(plan) || Added(plan) || !Changed(&nomadapi.JobPlanResponse{Diff: d}) {
		t.Error("Changed and Added disagree with the diff's type")
	}
}

func TestLastLines(t *testing.T) {
	if got := lastLines([]byte("a\nb\nc\n"), 2); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("%q", got)
	}
	if got := lastLines([]byte("\n"), 2); got != nil {
		t.Errorf("%q", got)
	}
}

func TestAllocHealth(t *testing.T) {
	yes, no := true, false
	for _, c := range []struct {
		status             string
		healthy            *bool
		running, unhealthy bool
	}{
		{"running", nil, true, true}, // a system job's, or one not yet judged
		{"running", &yes, true, false},
		{"running", &no, false, true},
		{"pending", nil, false, true},
		{"failed", nil, false, true},
		{"complete", nil, false, false},
	} {
		a := &nomadapi.AllocationListStub{ClientStatus: c.status}
		if c.healthy != nil {
			a.DeploymentStatus = &nomadapi.AllocDeploymentStatus{Healthy: c.healthy}
		}
		if Running(a) != c.running || Unhealthy(a) != c.unhealthy {
			t.Errorf("%s healthy=%v: Running %v, Unhealthy %v; want %v, %v", c.status, c.healthy, Running(a), Unhealthy(a), c.running, c.unhealthy)
		}
	}
}

func TestAllocLines(t *testing.T) {
	a := &nomadapi.AllocationListStub{ID: "0123456789abcdef", TaskGroup: "web", JobVersion: 3, NodeName: "client-1", ClientStatus: "failed", ClientDescription: "Failed tasks"}
	at := time.Date(2024, 1, 2, 10, 11, 12, 0, time.UTC).UnixNano()
	tasks := map[string]*nomadapi.TaskState{
		"server": {State: "dead", Failed: true, Restarts: 2, Events: []*nomadapi.TaskEvent{
			{Type: "Started", Time: at, Message: "started"},
			{Type: "Terminated", Time: at, DisplayMessage: "Exit Code: 3"},
		}},
	}
	checks := nomadapi.AllocCheckStatuses{
		"a": {Check: "alive", Service: "web", Status: "failure", Output: "connection refused\n"},
		"b": {Check: "ready", Service: "web", Status: "success"},
	}
	logs := func(task, stream string) ([]string, error) {
		if stream == "stderr" {
			return []string{"fatal: no database"}, nil
		}
		return nil, errors.New("reading the log: gone")
	}
	got := strings.Join(allocLines(a, tasks, checks, logs), "\n")
	want := `allocation 01234567 (group "web", version 3) on client-1: failed Failed tasks
  check "alive" of service "web": failure: connection refused
  task "server": dead, failed, 2 restart(s); events:
    10:11:12 Started: started
    10:11:12 Terminated: Exit Code: 3
  task "server" stderr, last 1 line(s):
    | fatal: no database
  task "server" stdout: reading the log: gone`
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}
