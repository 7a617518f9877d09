package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(b)
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(newHandler())
	defer srv.Close()
	if got := get(t, srv.URL+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz: %q", got)
	}
	get(t, srv.URL+"/")
	get(t, srv.URL+"/")
	if got := get(t, srv.URL+"/metrics"); !strings.Contains(got, "web_requests_total 2\n") {
		t.Errorf("/metrics after two requests:\n%s", got)
	}
}
