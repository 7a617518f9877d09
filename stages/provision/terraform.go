package provision

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"
	"golang.org/x/crypto/ssh"

	"github.com/platform-bootstrap/bootstrap/ansible"
	"github.com/platform-bootstrap/bootstrap/internal/config"
	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/provider/terraform"
	"github.com/platform-bootstrap/bootstrap/internal/sshwait"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// runner prepares Terraform for the configured module. The keys stage's
// public key is passed as the variable ssh_public_key, which the shipped
// modules upload to the cloud (Terraform ignores it for modules that do not
// declare it).
func runner(e *stages.Env) (*terraform.Runner, error) {
	cfg := *e.Config.Provider.Terraform
	cfg.Vars = maps.Clone(cfg.Vars)
	if cfg.Vars == nil {
		cfg.Vars = map[string]cty.Value{}
	}
	if _, set := cfg.Vars["ssh_public_key"]; !set {
		pub, ok, err := e.Secrets.Get(stages.SecretSSHPublicKey)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, stages.NotReadyf("no SSH key yet: the keys stage has not run")
		}
		cfg.Vars["ssh_public_key"] = cty.StringVal(strings.TrimSpace(pub))
	}
	return terraform.New(&cfg, e.Config.Dir, e.Path("terraform"), e.Log)
}

func planTerraform(ctx context.Context, e *stages.Env) ([]stages.Change, error) {
	r, err := runner(e)
	if err != nil {
		return nil, err
	}
	changes, err := r.Plan(ctx)
	if err != nil || len(changes) > 0 {
		return changes, err
	}
	// Terraform is converged; the recorded inventory must match its output.
	want, err := r.Inventory(ctx)
	if err != nil {
		return nil, err
	}
	fillSSHKey(want, e)
	have, err := loadExisting(e)
	if err != nil {
		return nil, err
	}
	if have == nil {
		return []stages.Change{{Action: "create", Target: "inventory", Detail: "from the module's bootstrap_inventory output"}}, nil
	}
	return diffNodes(e.Config, have, want), nil
}

func applyTerraform(ctx context.Context, e *stages.Env) error {
	r, err := runner(e)
	if err != nil {
		return err
	}
	e.Step("terraform apply in %s", r.Dir())
	inv, err := r.Apply(ctx)
	if err != nil {
		return err
	}
	fillSSHKey(inv, e)
	if err := waitSSH(ctx, e, inv); err != nil {
		return err
	}
	return save(e, inv)
}

func destroyTerraform(ctx context.Context, e *stages.Env) error {
	r, err := runner(e)
	if err != nil {
		return err
	}
	e.Step("terraform destroy in %s", r.Dir())
	return r.Destroy(ctx)
}

// waitSSH waits until every node answers SSH with the keys stage's key and
// records its host key (trust on first use; a changed key fails).
func waitSSH(ctx context.Context, e *stages.Env, inv *inventory.Inventory) error {
	key, ok, err := e.Secrets.Get(stages.SecretSSHKey)
	if err != nil {
		return err
	}
	if !ok {
		return stages.NotReadyf("no SSH key yet: the keys stage has not run")
	}
	signer, err := ssh.ParsePrivateKey([]byte(key))
	if err != nil {
		return fmt.Errorf("SSH key %s: %w", e.Secrets.Path(stages.SecretSSHKey), err)
	}
	timeout := 5 * time.Minute
	if t := e.Config.Provider.Terraform; t != nil {
		if d, err := config.ParseDuration(t.SSHTimeout); err == nil {
			timeout = d
		}
	}
	e.Step("waiting for SSH on %d node(s)", len(inv.Nodes))
	return sshwait.Wait(ctx, inv.Nodes, sshwait.Options{
		KnownHosts: ansible.KnownHostsFile(e),
		Signer:     signer,
		Timeout:    timeout,
		Log:        e.Log,
	})
}
