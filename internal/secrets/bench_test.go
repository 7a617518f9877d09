package secrets

import (
	"fmt"
	"io"
	"strings"
	"testing"
)

// BenchmarkRedactLine measures the redactor on one ordinary log line with
// the number of secrets a full platform stores (~60).
func BenchmarkRedactLine(b *testing.B) {
	r := NewRedactor()
	for i := range 60 {
		r.Add(fmt.Sprintf("secret-value-%04d-abcdefghijklmnopqrstuvwxyz", i))
	}
	line := "2026-11-22T02:29:15Z [consul] setting the agent token of client-2 on https://127.0.1.5:8501\n"
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		_ = r.String(line)
	}
}

// BenchmarkRedactWriter measures the line writer every output passes
// through, on a 64 KiB burst of Ansible-like output.
func BenchmarkRedactWriter(b *testing.B) {
	r := NewRedactor()
	for i := range 60 {
		r.Add(fmt.Sprintf("secret-value-%04d-abcdefghijklmnopqrstuvwxyz", i))
	}
	chunk := []byte(strings.Repeat("TASK [consul : Write Consul's configuration] ok: [server-1]\n", 1100))
	w := r.Writer(io.Discard)
	b.ReportAllocs()
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := w.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}
