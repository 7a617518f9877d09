package deploy

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// printer writes plain timestamped lines, the format CI logs want: one
// event per line, greppable, no terminal control.
type printer struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
}

func newPrinter(w io.Writer) *printer {
	return &printer{w: w, now: time.Now}
}

// Printf writes one message; a multi-line message gets the timestamp on
// every line so that a CI log stays greppable.
func (p *printer) Printf(format string, args ...any) {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	ts := p.now().UTC().Format("2006-01-02T15:04:05Z")
	p.mu.Lock()
	defer p.mu.Unlock()
	for line := range strings.SplitSeq(msg, "\n") {
		fmt.Fprintf(p.w, "%s %s\n", ts, line)
	}
}
