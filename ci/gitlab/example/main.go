// Command web is the example application of ci/gitlab: a small HTTP
// service with a health check for Nomad and metrics for Prometheus.
package main

import (
	"cmp"
	"fmt"
	"log"
	"net/http"
	"os"
	"sync/atomic"
)

func main() {
	addr := ":" + cmp.Or(os.Getenv("PORT"), "8080")
	log.Printf("web: listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, newHandler()))
}

// newHandler serves the application (/), Nomad's check (/healthz) and
// Prometheus' scrape (/metrics, in the text exposition format).
func newHandler() http.Handler {
	var requests atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprintln(w, "hello from web")
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintln(w, "# HELP web_requests_total Requests served at /.")
		fmt.Fprintln(w, "# TYPE web_requests_total counter")
		fmt.Fprintf(w, "web_requests_total %d\n", requests.Load())
	})
	return mux
}
