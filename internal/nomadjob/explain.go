package nomadjob

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"
)

const (
	// explainAllocs is how many failing allocations are shown in full.
	explainAllocs = 3
	// logLines is how much of each log a failure shows.
	logLines = 20
	// logBytes is how far back from the end of a log to read for them.
	logBytes = 8 << 10
)

// Explain says why allocations failed, the newest first and at most three
// of them: their status, the service checks Nomad runs itself that do not
// pass, each task's state and events, and the last lines of its stderr and
// stdout. It returns lines to print; what it cannot read it says in place.
func Explain(ctx context.Context, c *nomadapi.Client, ns string, allocs []*nomadapi.AllocationListStub) []string {
	allocs = slices.Clone(allocs)
	slices.SortFunc(allocs, func(a, b *nomadapi.AllocationListStub) int { return cmp.Compare(b.ModifyIndex, a.ModifyIndex) })
	var out []string
	if len(allocs) > explainAllocs {
		out = append(out, fmt.Sprintf("%d allocations failed; showing the last %d", len(allocs), explainAllocs))
		allocs = allocs[:explainAllocs]
	}
	q := (&nomadapi.QueryOptions{Namespace: ns}).WithContext(ctx)
	for _, a := range allocs {
		out = append(out, explainAlloc(ctx, c, q, a)...)
	}
	return out
}

func explainAlloc(ctx context.Context, c *nomadapi.Client, q *nomadapi.QueryOptions, a *nomadapi.AllocationListStub) []string {
	alloc, _, err := c.Allocations().Info(a.ID, q)
	if err != nil {
		return []string{describe(a), fmt.Sprintf("  reading allocation %s: %v", Short(a.ID), err)}
	}
	// Consul's checks are Consul's (a CI token cannot read them); Nomad's
	// own are the allocation's.
	checks, _ := c.Allocations().Checks(a.ID, q)
	return allocLines(a, alloc.TaskStates, checks, func(task, stream string) ([]string, error) {
		return tail(ctx, c, q, alloc, task, stream)
	})
}

func describe(a *nomadapi.AllocationListStub) string {
	return fmt.Sprintf("allocation %s (group %q, version %d) on %s: %s %s", Short(a.ID), a.TaskGroup, a.JobVersion, a.NodeName, a.ClientStatus, a.ClientDescription)
}

// allocLines describes an allocation from its task states, its checks and
// the logs its tasks left.
func allocLines(a *nomadapi.AllocationListStub, tasks map[string]*nomadapi.TaskState, checks nomadapi.AllocCheckStatuses, logs func(task, stream string) ([]string, error)) []string {
	out := []string{describe(a)}
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	for _, id := range slices.Sorted(maps.Keys(checks)) {
		if ch := checks[id]; ch.Status != "success" {
			add("  check %q of service %q: %s: %s", ch.Check, ch.Service, ch.Status, strings.TrimSpace(ch.Output))
		}
	}
	for _, task := range slices.Sorted(maps.Keys(tasks)) {
		ts := tasks[task]
		failed := ""
		if ts.Failed {
			failed = ", failed"
		}
		add("  task %q: %s%s, %d restart(s); events:", task, ts.State, failed, ts.Restarts)
		for _, ev := range ts.Events {
			msg := ev.DisplayMessage
			if msg == "" {
				msg = ev.Message
			}
			add("    %s %s: %s", time.Unix(0, ev.Time).UTC().Format(time.TimeOnly), ev.Type, msg)
		}
		for _, stream := range []string{"stderr", "stdout"} {
			lines, err := logs(task, stream)
			switch {
			case err != nil:
				add("  task %q %s: %v", task, stream, err)
			case len(lines) == 0:
				add("  task %q %s: (empty)", task, stream)
			default:
				add("  task %q %s, last %d line(s):", task, stream, len(lines))
				for _, l := range lines {
					add("    | %s", l)
				}
			}
		}
	}
	return out
}

// tail returns the last lines of a task's log.
func tail(ctx context.Context, c *nomadapi.Client, q *nomadapi.QueryOptions, alloc *nomadapi.Allocation, task, stream string) ([]string, error) {
	cancel := make(chan struct{})
	defer close(cancel)
	frames, errs := c.AllocFS().Logs(alloc, false, task, stream, "end", logBytes, cancel, q)
	var buf bytes.Buffer
	for {
		select {
		case fr, ok := <-frames:
			if !ok {
				b := buf.Bytes()
				if len(b) >= logBytes { // started mid-line
					_, b, _ = bytes.Cut(b, []byte("\n"))
				}
				return lastLines(b, logLines), nil
			}
			buf.Write(fr.Data)
		case err := <-errs:
			return nil, fmt.Errorf("reading the log: %w", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func lastLines(b []byte, n int) []string {
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// Short is the first eight characters of an ID, as the nomad CLI shows it.
func Short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
