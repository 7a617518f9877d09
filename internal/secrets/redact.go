package secrets

import (
	"bytes"
	"io"
	"sort"
	"strings"
	"sync"
)

// Redacted replaces a secret wherever it would be printed.
const Redacted = "<redacted>"

// minLen keeps short values (a "1" key share count, "true") from being
// treated as secrets and mangling ordinary output. Every secret the tool
// generates is far longer.
const minLen = 8

// Redactor knows every secret value of a run and removes them from text.
// It is safe for concurrent use.
type Redactor struct {
	mu     sync.RWMutex
	values map[string]struct{}
	sorted []string // longest first, so a secret containing another is removed whole
}

// NewRedactor returns an empty redactor.
func NewRedactor() *Redactor {
	return &Redactor{values: map[string]struct{}{}}
}

// Add registers secret values. Multi-line values are also registered line by
// line (a PEM key printed by a tool may be split across writes).
func (r *Redactor) Add(values ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	for _, v := range values {
		for _, s := range append([]string{v}, strings.Split(v, "\n")...) {
			s = strings.TrimSpace(s)
			if len(s) < minLen {
				continue
			}
			if _, ok := r.values[s]; !ok {
				r.values[s] = struct{}{}
				changed = true
			}
		}
	}
	if changed {
		r.sorted = r.sorted[:0]
		for s := range r.values {
			r.sorted = append(r.sorted, s)
		}
		sort.Slice(r.sorted, func(i, j int) bool { return len(r.sorted[i]) > len(r.sorted[j]) })
	}
}

// String returns s with every known secret replaced by Redacted.
func (r *Redactor) String(s string) string {
	if r == nil {
		return s
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, v := range r.sorted {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, Redacted)
		}
	}
	return s
}

// Writer returns a writer that redacts whole lines before passing them on to
// w. Text is held until a newline (or Close) so a secret split across two
// Write calls is still caught.
func (r *Redactor) Writer(w io.Writer) *LineWriter {
	return &LineWriter{r: r, w: w}
}

// LineWriter is the redacting writer returned by Redactor.Writer.
type LineWriter struct {
	mu  sync.Mutex
	r   *Redactor
	w   io.Writer
	buf []byte
}

func (lw *LineWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.buf = append(lw.buf, p...)
	i := bytes.LastIndexByte(lw.buf, '\n')
	if i < 0 {
		return len(p), nil
	}
	out := lw.r.String(string(lw.buf[:i+1]))
	rest := copy(lw.buf, lw.buf[i+1:])
	lw.buf = lw.buf[:rest]
	if _, err := io.WriteString(lw.w, out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close writes out whatever is left without a trailing newline.
func (lw *LineWriter) Close() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if len(lw.buf) == 0 {
		return nil
	}
	out := lw.r.String(string(lw.buf))
	lw.buf = lw.buf[:0]
	_, err := io.WriteString(lw.w, out)
	return err
}
