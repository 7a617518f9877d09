package cluster

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRetryForwarded(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		switch {
		case r.URL.Path == "/other":
			http.Error(w, "permission denied", http.StatusInternalServerError)
		case n <= 2:
			http.Error(w, "rpc error: EOF", http.StatusInternalServerError)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	defer srv.Close()
	c := &http.Client{Transport: retryForwarded{next: http.DefaultTransport}}
	do := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}

	if code, body := do(http.MethodPost, "/write"); code != 500 || calls.Load() != 1 {
		t.Errorf("a write: %d %q after %d calls, want the 500 at once", code, body, calls.Load())
	}
	calls.Store(0)
	if code, body := do(http.MethodGet, "/read"); code != 200 || body != "ok" || calls.Load() != 3 {
		t.Errorf("a read: %d %q after %d calls, want ok on the third", code, body, calls.Load())
	}
	calls.Store(0)
	if code, body := do(http.MethodGet, "/other"); code != 500 || body != "permission denied" || calls.Load() != 1 {
		t.Errorf("another error: %d %q after %d calls, want it as it came, once", code, body, calls.Load())
	}
}

// A request whose connection was refused, as while a server restarts, is
// sent again, body and all, once the server listens; one that reached a
// server is not.
func TestRetryForwardedRefusedDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refused until the server below listens there
	var got atomic.Value
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.Store(string(b))
		_, _ = io.WriteString(w, "ok")
	})}
	defer srv.Close()
	go func() {
		time.Sleep(time.Second)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		_ = srv.Serve(ln)
	}()
	// A client that asks whether an agent answers hears no at once.
	probe := &http.Client{Transport: retryForwarded{next: http.DefaultTransport}}
	if resp, err := probe.Get("http://" + addr + "/v1/agent/self"); err == nil {
		resp.Body.Close()
		t.Fatal("a probe of a refusing address succeeded: it waited for the server")
	}
	c := &http.Client{Transport: retryForwarded{next: http.DefaultTransport, dialWait: serverDialWait}}
	resp, err := c.Post("http://"+addr+"/v1/jobs/parse", "application/json", strings.NewReader(`{"JobHCL":"job"}`))
	if err != nil {
		t.Fatalf("a write to a server that listens a second later: %v", err)
	}
	resp.Body.Close()
	if b, _ := got.Load().(string); b != `{"JobHCL":"job"}` {
		t.Errorf("the server got the body %q, want it whole", b)
	}
}
