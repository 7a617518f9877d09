package ui

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

type plainSink struct {
	mu  sync.Mutex
	w   io.Writer
	log bool // the log file: keeps EventLog detail too
}

// NewLog returns the sink of a run's log file: plain lines, with the detail
// that the other modes leave out.
func NewLog(w io.Writer) Sink { return &plainSink{w: w, log: true} }

func (p *plainSink) Event(e stages.Event) {
	if e.Type == stages.EventLog && !p.log {
		return // detail goes to the log file
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	io.WriteString(p.w, PlainLine(e))
}

func (p *plainSink) Close() {}

// PlainLine renders an event as one timestamped line (with the plan's changes
// on the following lines), the format of CI output and of the log file.
func PlainLine(e stages.Event) string {
	var b strings.Builder
	ts := e.Time.UTC().Format("2006-01-02T15:04:05Z")
	prefix := ts
	if e.Stage != "" {
		prefix += " [" + e.Stage + "]"
	}
	switch e.Type {
	case stages.EventRunStart:
		fmt.Fprintf(&b, "%s %s: run %s\n", prefix, e.Command, e.Run)
		if e.Stale != nil {
			fmt.Fprintf(&b, "%s warning: the previous run (%s) ended without releasing the lock; taking it over\n", prefix, e.Stale)
		}
	case stages.EventStageStart:
		msg := e.Message
		if msg == "" {
			msg = "started"
		}
		fmt.Fprintf(&b, "%s %s\n", prefix, msg)
	case stages.EventPlan:
		fmt.Fprintf(&b, "%s %d change(s):\n", prefix, len(e.Changes))
		for _, c := range e.Changes {
			fmt.Fprintf(&b, "%s   %s\n", prefix, ChangeLine(c))
		}
	case stages.EventStep, stages.EventLog:
		fmt.Fprintf(&b, "%s %s\n", prefix, e.Message)
	case stages.EventWarning:
		fmt.Fprintf(&b, "%s warning: %s\n", prefix, e.Message)
	case stages.EventStageEnd:
		fmt.Fprintf(&b, "%s %s in %s", prefix, e.Outcome, e.Duration.Round(10*time.Millisecond))
		if e.Error != "" {
			fmt.Fprintf(&b, ": %s", e.Error)
		}
		b.WriteString("\n")
	case stages.EventRunEnd:
		fmt.Fprintf(&b, "%s %s finished in %s", prefix, e.Command, e.Duration.Round(10*time.Millisecond))
		if e.Error != "" {
			fmt.Fprintf(&b, " with error: %s", e.Error)
		}
		b.WriteString("\n")
	default:
		fmt.Fprintf(&b, "%s %s %s\n", prefix, e.Type, e.Message)
	}
	return b.String()
}

// ChangeLine renders one change with its mark, the way every plan shows it.
func ChangeLine(c stages.Change) string { return c.Action.Mark() + " " + c.String() }

// Plans writes what an up will change, stage by stage, for approval.
func Plans(w io.Writer, plans []statedir.StageResult) {
	fmt.Fprintln(w, "bootstrap will make these changes:")
	for _, p := range plans {
		switch p.Outcome {
		case statedir.OutcomeUnchanged:
			fmt.Fprintf(w, "  %s: no changes\n", p.Name)
		case statedir.OutcomePlanned:
			fmt.Fprintf(w, "  %s:\n", p.Name)
			for _, c := range p.Changes {
				fmt.Fprintf(w, "      %s\n", ChangeLine(c))
			}
		default:
			fmt.Fprintf(w, "  %s: %s\n", p.Name, p.Error)
			// A waiting stage's changes are those it knows from the
			// configuration (stages.KnownDetail).
			for _, c := range p.Changes {
				fmt.Fprintf(w, "      %s\n", ChangeLine(c))
			}
		}
	}
}

// Results writes the table of stage outcomes that ends a run.
func Results(w io.Writer, results []statedir.StageResult) {
	if len(results) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tOUTCOME\tDURATION\tCHANGES")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", r.Name, r.Outcome, r.Duration.Round(10*time.Millisecond), len(r.Changes))
	}
	tw.Flush()
}
