// Command lab runs the machine lab (internal/lab): real systemd machines in
// systemd-nspawn containers on this box, for bootstrap's static provider.
//
//	lab up   [-dir .lab] [-servers 3] [-clients 2] [-bin ./bin] [-data-volumes client-1] [-public]
//	lab down [-dir .lab]
//
// up writes DIR/inventory.json (the inventory contract) and DIR/lab.hcl,
// ready for `bootstrap up -c DIR/lab.hcl`. With -public the clients also
// get a public address (10.214.NET.0/24, the host is .1), which the
// inventory gives and bootstrap reaches them on, and the network namespace
// lab-NAME-out (.2) plays a user on the Internet:
// `ip netns exec lab-NAME-out curl http://PUBLIC_IP/`. down removes every machine,
// mount, link and cgroup the lab made, from DIR/state.json alone.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/platform-bootstrap/bootstrap/internal/lab"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	fl := flag.NewFlagSet("lab "+cmd, flag.ExitOnError)
	dir := fl.String("dir", ".lab", "the lab's directory (state, overlays, key, inventory.json, lab.hcl)")
	servers := fl.Int("servers", 3, "server machines (the first also runs Vault)")
	clients := fl.Int("clients", 2, "client machines")
	name := fl.String("name", "lab", "the lab's name, unique on this box (1-6 characters)")
	netn := fl.Int("net", 0, "the lab's network: 10.213.NET.0/24")
	bin := fl.String("bin", "bin", "the binaries bootstrap copies to the machines (lab.hcl's bin_dir)")
	key := fl.String("authorized-key", "", "a public key file root accepts besides the lab's own key")
	volumes := fl.String("data-volumes", "", "machines that get a data volume (a loop device; their data_device), e.g. client-1,client-2")
	public := fl.Bool("public", false, "give the clients public addresses (10.214.NET.0/24) and make the outside network namespace lab-NAME-out")
	fl.Parse(args)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "up":
		binDir, err := filepath.Abs(*bin)
		check(err)
		cfg := lab.Config{Dir: *dir, Name: *name, Net: *netn, Nodes: lab.Nodes(*servers, *clients), BinDir: binDir, Public: *public, Log: os.Stderr}
		if *volumes != "" {
			cfg.DataVolumes = strings.Split(*volumes, ",")
		}
		if *key != "" {
			b, err := os.ReadFile(*key)
			check(err)
			cfg.AuthorizedKeys = append(cfg.AuthorizedKeys, string(b))
		}
		st, err := lab.Up(ctx, cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "lab up:", err)
			if st != nil {
				fmt.Fprintln(os.Stderr, "lab up: removing what was created")
				dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				if err := lab.Down(dctx, st.Dir); err != nil {
					fmt.Fprintln(os.Stderr, "lab down:", err)
				}
			}
			os.Exit(1)
		}
		for _, m := range st.Machines {
			fmt.Printf("%-10s %-14s %-14s %v\n", m.Name, m.IP, m.PublicIP, m.Roles)
		}
		if st.OutsideNetns != "" {
			fmt.Printf("outside:   ip netns exec %s ... (%s)\n", st.OutsideNetns, st.OutsideIP)
		}
		fmt.Printf("inventory: %s\nconfig:    %s\n  bin/bootstrap up -c %s\n", st.InventoryFile(), st.ConfigFile(), st.ConfigFile())
	case "down":
		check(lab.Down(ctx, *dir))
	default:
		usage()
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: lab up|down [-dir DIR] [flags]; lab up -h for the flags")
	os.Exit(2)
}
