package secrets_test

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/platform-bootstrap/bootstrap/internal/secrets"
)

const pemKey = `-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDqk7t5dG1lc3RrZXlfZm9yX3JlZGFjdGlvbl90ZXN0cwAAAJhkZWFkYmVl
ZmRlYWRiZWVmAAAAC3NzaC1lZDI1NTE5AAAAIOqTu3l0bWVzdGtleV9mb3JfcmVkYWN0aW
-----END OPENSSH PRIVATE KEY-----
`

func TestRedactorString(t *testing.T) {
	r := secrets.NewRedactor()
	r.Add("hvs.CAESIJ2k3mZ9", "short", "", "  padded-secret-value  ")
	for in, want := range map[string]string{
		"token hvs.CAESIJ2k3mZ9 used":              "token <redacted> used",
		"hvs.CAESIJ2k3mZ9hvs.CAESIJ2k3mZ9":         "<redacted><redacted>",
		"a short value stays":                      "a short value stays", // below the minimum length
		"x=padded-secret-value;":                   "x=<redacted>;",
		"nothing secret here":                      "nothing secret here",
		"prefix hvs.CAESIJ2k3mZ and not the whole": "prefix hvs.CAESIJ2k3mZ and not the whole",
	} {
		if got := r.String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
	var nilRed *secrets.Redactor
	if got := nilRed.String("x hvs.CAESIJ2k3mZ9"); got != "x hvs.CAESIJ2k3mZ9" {
		t.Errorf("nil redactor changed the text: %q", got)
	}
}

// A secret that contains another is removed whole, not as a redacted
// prefix followed by its tail.
func TestRedactorLongestFirst(t *testing.T) {
	r := secrets.NewRedactor()
	// Added shortest first on purpose.
	r.Add("abcdefgh", "abcdefgh-ijkl", "abcdefgh-ijkl-mnop")
	for in, want := range map[string]string{
		"k=abcdefgh-ijkl-mnop": "k=<redacted>",
		"k=abcdefgh-ijkl":      "k=<redacted>",
		"k=abcdefgh-ijkl-xx":   "k=<redacted>-xx",
		"k=abcdefgh!":          "k=<redacted>!",
	} {
		if got := r.String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRedactorMultiLinePEM(t *testing.T) {
	r := secrets.NewRedactor()
	r.Add(pemKey)
	if got := r.String("key:\n" + pemKey + "done"); strings.Contains(got, "b3BlbnNzaC1rZXkt") || !strings.HasSuffix(got, "done") {
		t.Errorf("whole PEM not redacted:\n%s", got)
	}
	// A tool that prints the key indented, or one line of it, leaks nothing.
	var indented strings.Builder
	for _, l := range strings.Split(pemKey, "\n") {
		indented.WriteString("    " + l + "\n")
	}
	got := r.String(indented.String())
	for _, l := range strings.Split(strings.TrimSpace(pemKey), "\n")[1:4] {
		if strings.Contains(got, l) {
			t.Errorf("line %q of the key leaked:\n%s", l, got)
		}
	}
	// Redacted through a writer that gets the key in odd pieces.
	var out bytes.Buffer
	w := r.Writer(&out)
	src := "ansible: " + pemKey + "ok\n"
	for i := 0; i < len(src); i += 7 {
		w.Write([]byte(src[i:min(i+7, len(src))]))
	}
	w.Close()
	for _, l := range strings.Split(strings.TrimSpace(pemKey), "\n") {
		if strings.Contains(out.String(), l) && len(l) >= 8 && !strings.HasPrefix(l, "-----") {
			t.Errorf("line %q leaked through the writer:\n%s", l, out.String())
		}
	}
	if !strings.HasSuffix(out.String(), "ok\n") {
		t.Errorf("writer lost the text after the key: %q", out.String())
	}
}

// A secret split across two Write calls is still caught: the writer holds
// text back until the end of the line.
func TestLineWriterSplitWrites(t *testing.T) {
	r := secrets.NewRedactor()
	const secret = "s.9f86d081884c7d659a2feaa0"
	r.Add(secret)
	var out bytes.Buffer
	w := r.Writer(&out)
	for _, part := range []string{"login s.9f86d0", "81884c7d", "659a2feaa0 ok\nnext ", "line s.9f86d081884c7d659a2feaa0"} {
		n, err := w.Write([]byte(part))
		if err != nil || n != len(part) {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if strings.Contains(out.String(), "s.9f86") {
			t.Fatalf("a partial secret reached the output: %q", out.String())
		}
	}
	if got := out.String(); got != "login <redacted> ok\n" {
		t.Errorf("before Close: %q", got)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "login <redacted> ok\nnext line <redacted>" {
		t.Errorf("after Close: %q", got)
	}
	if err := w.Close(); err != nil || out.String() != "login <redacted> ok\nnext line <redacted>" {
		t.Errorf("second Close wrote again: %q, %v", out.String(), err)
	}
}

// Secrets registered after the writer was made are redacted too: stages
// generate secrets in the middle of a run.
func TestLineWriterLateSecret(t *testing.T) {
	r := secrets.NewRedactor()
	var out bytes.Buffer
	w := r.Writer(&out)
	w.Write([]byte("before\n"))
	r.Add("late-generated-token")
	w.Write([]byte("token late-generated-token\n"))
	if got := out.String(); got != "before\ntoken <redacted>\n" {
		t.Errorf("output = %q", got)
	}
}

func TestLineWriterConcurrent(t *testing.T) {
	r := secrets.NewRedactor()
	r.Add("concurrent-secret-1")
	var out bytes.Buffer
	w := r.Writer(&out)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				fmt.Fprintf(w, "goroutine %d line %d concurrent-secret-1\n", i, j)
				r.Add(fmt.Sprintf("added-while-writing-%d-%d", i, j))
			}
		}()
	}
	wg.Wait()
	w.Close()
	if strings.Contains(out.String(), "concurrent-secret-1") || strings.Count(out.String(), "\n") != 400 {
		t.Errorf("concurrent writes: %d lines, secret present: %v", strings.Count(out.String(), "\n"), strings.Contains(out.String(), "concurrent-secret-1"))
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestLineWriterError(t *testing.T) {
	w := secrets.NewRedactor().Writer(failWriter{})
	if _, err := w.Write([]byte("a line\n")); err == nil {
		t.Error("the underlying writer's error was lost")
	}
}
