// Command floor brings up the same platform as `bootstrap up` on the local
// provider — Vault with its PKI, 3 Consul and 3 Nomad servers plus clients
// with mutual TLS, gossip encryption and ACLs, and the platform jobs — by
// hand and as directly as it can: no Ansible, no stage runner, no plan and
// re-plan, every independent step at once. Its time is the floor that
// `bootstrap up` is measured against (make bench); the work is the same:
// the same binaries, configuration, PKI calls, ACL objects, secrets and
// jobs, waited for until healthy.
//
// It listens on its own loopback subnet (127.0.9.0/24 by default), works
// in a temporary directory, and stops every process it started (by pid)
// and removes the directory when it ends, also when it fails.
//
// Usage:
//
//	go run ./tools/floor [-bin DIR] [-subnet CIDR] [-clients N] [-keep]
//
// It prints one line per phase, "phase<TAB>seconds", then "total<TAB>seconds".
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "bin", "directory with vault, consul, nomad, ... (make tools)")
	subnet := flag.String("subnet", "127.0.9.0/24", "loopback subnet of the nodes")
	servers := flag.Int("servers", 3, "servers")
	clients := flag.Int("clients", 2, "clients")
	keep := flag.Bool("keep", false, "leave the platform running until interrupted (to inspect it)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, options{bin: *bin, subnet: *subnet, servers: *servers, clients: *clients, keep: *keep}); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

type options struct {
	bin              string
	subnet           string
	servers, clients int
	keep             bool
}

// run brings the platform up, reports the time of each phase to out, and
// tears everything down again.
func run(ctx context.Context, out io.Writer, o options) (err error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "floor-")
	if err != nil {
		return err
	}
	ps := &procs{}
	defer func() {
		// A fresh context: the run's may be cancelled already.
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if serr := ps.stopAll(sctx); serr != nil && err == nil {
			err = fmt.Errorf("stop: %w", serr)
		}
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = rerr
		}
	}()
	p, err := newPlatform(dir, bin, o, ps)
	if err != nil {
		return err
	}
	up, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()

	start := time.Now()
	for _, ph := range []struct {
		name string
		do   func(context.Context) error
	}{
		{"vault", p.vault},
		{"pki", p.pki},
		{"consul", p.consul},
		{"nomad", p.nomad},
		{"jobs", p.jobs},
	} {
		t := time.Now()
		if err := ph.do(up); err != nil {
			return fmt.Errorf("%s: %w (files in %s)", ph.name, err, dir)
		}
		fmt.Fprintf(out, "%s\t%.2f\n", ph.name, time.Since(t).Seconds())
	}
	fmt.Fprintf(out, "total\t%.2f\n", time.Since(start).Seconds())
	if o.keep {
		fmt.Fprintf(os.Stderr, "floor: up in %s; interrupt to stop it\n", dir)
		<-ctx.Done()
	}
	return nil
}
