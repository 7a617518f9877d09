// Command fetch downloads one HashiCorp release with hc-install, which checks
// the SHA256SUMS file and its HashiCorp PGP signature before unpacking.
// install.sh uses it where releases.hashicorp.com is reachable.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-version"
	"github.com/hashicorp/hc-install/product"
	"github.com/hashicorp/hc-install/releases"
)

func main() {
	name := flag.String("product", "", "vault, consul, nomad, consul-template or terraform")
	ver := flag.String("version", "", "exact version")
	dest := flag.String("dest", "", "directory for the binary")
	timeout := flag.Duration("timeout", 5*time.Minute, "download timeout")
	flag.Parse()
	if err := run(*name, *ver, *dest, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "fetch:", err)
		os.Exit(1)
	}
}

func run(name, ver, dest string, timeout time.Duration) error {
	products := map[string]product.Product{
		"vault":           product.Vault,
		"consul":          product.Consul,
		"nomad":           product.Nomad,
		"terraform":       product.Terraform,
		"consul-template": {Name: "consul-template", BinaryName: func() string { return "consul-template" }},
	}
	p, ok := products[name]
	if !ok {
		return fmt.Errorf("unknown product %q", name)
	}
	v, err := version.NewVersion(ver)
	if err != nil {
		return fmt.Errorf("version %q: %w", ver, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ev := &releases.ExactVersion{Product: p, Version: v, InstallDir: dest}
	path, err := ev.Install(ctx)
	if err != nil {
		return fmt.Errorf("install %s %s: %w", name, ver, err)
	}
	fmt.Println(filepath.Clean(path))
	return nil
}
