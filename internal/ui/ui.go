// Package ui renders a run's events: a live stage list on a terminal, plain
// timestamped lines for CI, or one JSON object per line.
package ui

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"golang.org/x/term"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Output modes accepted by --output.
const (
	ModeAuto  = "auto"
	ModeTTY   = "tty"
	ModePlain = "plain"
	ModeJSON  = "json"
)

// Sink is a Reporter that must be closed when the run ends, so a live view
// can restore the terminal.
type Sink interface {
	stages.Reporter
	Close()
}

// Resolve turns "auto" into tty or plain: plain when the output is not a
// terminal or CI=true.
func Resolve(mode string, out *os.File) (string, error) {
	switch mode {
	case ModeTTY, ModePlain, ModeJSON:
		return mode, nil
	case ModeAuto, "":
		if os.Getenv("CI") == "true" || !term.IsTerminal(int(out.Fd())) {
			return ModePlain, nil
		}
		return ModeTTY, nil
	}
	return "", fmt.Errorf("--output %q: use auto, tty, plain or json", mode)
}

// New returns the sink for a resolved mode. stageNames is the list the live
// view shows.
func New(mode string, w io.Writer, stageNames []string) Sink {
	switch mode {
	case ModeJSON:
		return &jsonSink{enc: json.NewEncoder(w)}
	case ModeTTY:
		return newLive(w, stageNames)
	default:
		return &plainSink{w: w}
	}
}

type jsonSink struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (j *jsonSink) Event(e stages.Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.enc.Encode(e)
}

func (j *jsonSink) Close() {}

// live is the terminal view: the stage list with a spinner on the running
// stage, its elapsed time and latest step; plans and warnings scroll above.
type live struct {
	prog *tea.Program
	done chan struct{}
}

func newLive(w io.Writer, names []string) *live {
	m := model{spin: spinner.New(spinner.WithSpinner(spinner.Dot)), rows: map[string]*row{}}
	for _, n := range names {
		m.order = append(m.order, n)
		m.rows[n] = &row{status: waiting}
	}
	l := &live{done: make(chan struct{})}
	l.prog = tea.NewProgram(m, tea.WithOutput(w), tea.WithInput(nil), tea.WithoutSignalHandler())
	go func() {
		defer close(l.done)
		l.prog.Run()
	}()
	return l
}

func (l *live) Event(e stages.Event) {
	// Lines above the list go through the program's queue with the events,
	// so they keep their order and are all printed before Close's quit; a
	// tea.Println command would run on a goroutine of its own and race both.
	if line, ok := aboveList(e); ok {
		l.prog.Send(tea.Println(line)())
	}
	l.prog.Send(e)
}

// aboveList is what an event prints above the stage list, if anything.
func aboveList(e stages.Event) (string, bool) {
	switch e.Type {
	case stages.EventPlan:
		var b strings.Builder
		fmt.Fprintf(&b, "%s: %d change(s)", e.Stage, len(e.Changes))
		for _, c := range e.Changes {
			fmt.Fprintf(&b, "\n    %s", ChangeLine(c))
		}
		return b.String(), true
	case stages.EventWarning:
		return warnStyle.Render("warning: ") + e.Message, true
	case stages.EventRunStart:
		if e.Stale != nil {
			return warnStyle.Render("warning: ") + fmt.Sprintf("the previous run (%s) ended without releasing the lock; taking it over", e.Stale), true
		}
	}
	return "", false
}

func (l *live) Close() {
	l.prog.Send(quit{})
	<-l.done
}

type quit struct{}

// A row waits, then runs, then shows the stage's outcome.
const (
	waiting statedir.Outcome = "pending"
	running statedir.Outcome = "running"
)

type row struct {
	status  statedir.Outcome
	started time.Time
	elapsed time.Duration
	step    string
	changes int
	err     string
}

type model struct {
	spin  spinner.Model
	order []string
	rows  map[string]*row
}

var (
	okStyle   = lipgloss.NewStyle().Foreground(lipgloss.Color("2"))
	failStyle = lipgloss.NewStyle().Foreground(lipgloss.Color("1"))
	dimStyle  = lipgloss.NewStyle().Foreground(lipgloss.Color("8"))
	warnStyle = lipgloss.NewStyle().Foreground(lipgloss.Color("3"))
)

func (m model) Init() tea.Cmd { return m.spin.Tick }

func (m model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case quit:
		return m, tea.Quit
	case spinner.TickMsg:
		var cmd tea.Cmd
		m.spin, cmd = m.spin.Update(msg)
		return m, cmd
	case stages.Event:
		r := m.rows[msg.Stage]
		if r == nil && msg.Stage != "" {
			r = &row{status: waiting}
			m.rows[msg.Stage] = r
			m.order = append(m.order, msg.Stage)
		}
		switch msg.Type {
		case stages.EventStageStart:
			r.status, r.started, r.step = running, msg.Time, msg.Message
		case stages.EventStep:
			r.step = msg.Message
		case stages.EventStageEnd:
			r.status, r.elapsed, r.err, r.changes, r.step = msg.Outcome, msg.Duration, msg.Error, len(msg.Changes), ""
		}
	}
	return m, nil
}

func (m model) View() string {
	var b strings.Builder
	for _, n := range m.order {
		r := m.rows[n]
		elapsed := r.elapsed.Round(100 * time.Millisecond)
		switch r.status {
		case waiting:
			fmt.Fprintf(&b, "  %s %s\n", dimStyle.Render("·"), dimStyle.Render(n))
		case running:
			fmt.Fprintf(&b, "  %s %-10s %s  %s\n", m.spin.View(), n, time.Since(r.started).Round(time.Second), dimStyle.Render(r.step))
		case statedir.OutcomeFailed:
			fmt.Fprintf(&b, "  %s %-10s %s  %s\n", failStyle.Render("✗"), n, elapsed, failStyle.Render(string(r.status)+": "+r.err))
		case statedir.OutcomeInterrupted:
			// Stopped by a signal, not broken: the next up resumes it.
			fmt.Fprintf(&b, "  %s %-10s %s  %s\n", warnStyle.Render("!"), n, elapsed, warnStyle.Render(string(r.status)+": "+r.err))
		case statedir.OutcomeNotReady:
			// Not run: it waits for earlier stages, so no check mark.
			fmt.Fprintf(&b, "  %s %-10s %s\n", warnStyle.Render("…"), n, dimStyle.Render(string(r.status)))
		case statedir.OutcomePlanned:
			fmt.Fprintf(&b, "  %s %-10s %s  %s\n", warnStyle.Render("~"), n, elapsed, warnStyle.Render(fmt.Sprintf("%d change(s) planned", r.changes)))
		case statedir.OutcomeUnchanged:
			fmt.Fprintf(&b, "  %s %-10s %s  %s\n", dimStyle.Render("="), n, elapsed, dimStyle.Render(string(r.status)))
		default:
			detail := string(r.status)
			if r.changes > 0 {
				detail = fmt.Sprintf("%s, %d change(s)", r.status, r.changes)
			}
			fmt.Fprintf(&b, "  %s %-10s %s  %s\n", okStyle.Render("✓"), n, elapsed, dimStyle.Render(detail))
		}
	}
	return b.String()
}
