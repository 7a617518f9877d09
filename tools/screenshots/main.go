// Command screenshots takes a tour of the running platform's web UIs in
// headless Chromium, signed in as a user would be, and writes a PNG of each
// page into a directory: what `make screenshots` runs, and where the
// README's pictures come from.
//
// Usage: go run ./tools/screenshots [-c platform.hcl] [-o screenshots] [-bootstrap bin/bootstrap]
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/browser"
)

func main() {
	config := flag.String("c", "platform.hcl", "the platform's configuration file")
	stateDir := flag.String("state-dir", "", "its state directory (default: .bootstrap next to the configuration)")
	out := flag.String("o", "screenshots", "directory for the PNGs")
	bin := flag.String("bootstrap", "bin/bootstrap", "the bootstrap binary")
	flag.Parse()
	if err := run(*bin, *config, *stateDir, *out); err != nil {
		fmt.Fprintln(os.Stderr, "screenshots:", err)
		os.Exit(1)
	}
}

func run(bin, config, stateDir, out string) error {
	if stateDir == "" {
		stateDir = filepath.Join(filepath.Dir(config), ".bootstrap")
	}
	ui, err := env(bin, config, stateDir, "ui")
	if err != nil {
		return err
	}
	admin, err := env(bin, config, stateDir, "admin")
	if err != nil {
		return err
	}
	if ui["NOMAD_ADDR"] == "" {
		return fmt.Errorf("%s has no platform up: run make up first", config)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b, err := browser.Start(ctx, ui["NOMAD_CACERT"], ui["CONSUL_CACERT"])
	if err != nil {
		return err
	}
	defer b.Close()
	b.Dir = out

	// Each tour runs even when one before it failed: a picture of what
	// works is still worth having, and the errors are all reported.
	var errs []error
	tour := func(name, addr string, f func() error) {
		if addr == "" {
			return
		}
		fmt.Printf("%s: %s\n", name, addr)
		if err := f(); err != nil {
			errs = append(errs, err)
		}
	}
	tour("nomad", ui["NOMAD_ADDR"], func() error {
		return b.NomadUI(ctx, ui["NOMAD_ADDR"], ui["NOMAD_TOKEN"], map[string][]string{"general": {"prometheus", "grafana"}})
	})
	tour("consul", ui["CONSUL_HTTP_ADDR"], func() error {
		return b.ConsulUI(ctx, ui["CONSUL_HTTP_ADDR"], ui["CONSUL_HTTP_TOKEN"], []string{"nomad", "consul"})
	})
	tour("grafana", admin["GRAFANA_ADDR"], func() error {
		pw, err := os.ReadFile(filepath.Join(stateDir, "secrets", "grafana", "admin-password"))
		if err != nil {
			return err
		}
		return b.GrafanaUI(ctx, admin["GRAFANA_ADDR"], string(pw), "")
	})
	tour("prometheus", admin["PROMETHEUS_ADDR"], func() error {
		return b.PrometheusUI(ctx, admin["PROMETHEUS_ADDR"], nil)
	})
	tour("alertmanager", admin["ALERTMANAGER_ADDR"], func() error { return b.AlertmanagerUI(ctx, admin["ALERTMANAGER_ADDR"]) })
	tour("fabio", admin["FABIO_UI_ADDR"], func() error { return b.FabioUI(ctx, admin["FABIO_UI_ADDR"], nil) })
	fmt.Printf("screenshots in %s\n", out)
	return errors.Join(errs...)
}

// env returns the variables of `bootstrap env --token who`.
func env(bin, config, stateDir, who string) (map[string]string, error) {
	cmd := exec.Command(bin, "env", "-c", config, "--state-dir", stateDir, "--token", who)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s env: %v: %s", bin, err, strings.TrimSpace(stderr.String()))
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		if ok {
			// bootstrap env quotes every value in single quotes, ' as '"'"'.
			vars[k] = strings.ReplaceAll(strings.Trim(v, "'"), `'"'"'`, "'")
		}
	}
	return vars, nil
}
