package terraform

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/terraform-exec/tfexec"
	tfjson "github.com/hashicorp/terraform-json"

	"github.com/platform-bootstrap/bootstrap/internal/inventory"
	"github.com/platform-bootstrap/bootstrap/internal/reconcile"
	"github.com/platform-bootstrap/bootstrap/stages"
)

// Plan reports what Apply would change, one change per resource instance
// (and per changed output), e.g. {create, digitalocean_droplet.server[0]}.
// No changes means the infrastructure matches the module.
//
// Plan runs with -lock=false: it changes nothing, so it takes no lock, and
// a lock left in a remote backend by someone else's apply does not block
// `bootstrap plan`. A state snapshot is written whole, so an unlocked read
// still sees a consistent one.
//
// When the planned bootstrap_inventory is already known, it is checked
// against the contract here, before anything is created.
func (r *Runner) Plan(ctx context.Context) ([]stages.Change, error) {
	if err := r.init(ctx); err != nil {
		return nil, err
	}
	out := filepath.Join(r.dir, planFile)
	defer os.Remove(out)
	changed, err := r.tf.Plan(ctx, tfexec.Lock(false), tfexec.Out(planFile))
	if err != nil {
		return nil, fmt.Errorf("terraform plan: %w", err)
	}
	plan, err := r.tf.ShowPlanFile(ctx, planFile)
	if err != nil {
		return nil, fmt.Errorf("terraform show %s: %w", planFile, err)
	}
	if err := r.checkPlannedOutput(plan); err != nil {
		return nil, err
	}
	changes := summarise(plan)
	if changed && len(changes) == 0 {
		// -detailed-exitcode saw a change the summary does not describe;
		// say so rather than report a converged module.
		changes = append(changes, stages.Change{Action: "update", Target: "terraform state", Detail: "see the plan in the log"})
	}
	return changes, nil
}

// summarise turns a plan into changes, in a stable order.
func summarise(plan *tfjson.Plan) []stages.Change {
	var changes []stages.Change
	for _, rc := range plan.ResourceChanges {
		if rc.Change == nil || rc.Mode == tfjson.DataResourceMode {
			continue
		}
		a := rc.Change.Actions
		var action, detail string
		switch {
		case a.NoOp(), a.Read():
			continue
		case a.Replace():
			action = "replace"
		case a.Create():
			action = "create"
		case a.Update():
			action = "update"
		case a.Delete():
			action = "delete"
		case a.Forget():
			action = "forget"
			detail = "removed from the state, left running"
		default:
			action = strings.Join(actionStrings(a), "+")
		}
		if rc.Change.Importing != nil {
			detail = "import"
		}
		changes = append(changes, stages.Change{Action: reconcile.Action(action), Target: rc.Address, Detail: detail})
	}
	var outs []string
	for name, oc := range plan.OutputChanges {
		if oc == nil || oc.Actions.NoOp() {
			continue
		}
		outs = append(outs, name)
	}
	sort.Strings(outs)
	for _, name := range outs {
		a := plan.OutputChanges[name].Actions
		action := reconcile.Update
		switch {
		case a.Create():
			action = reconcile.Create
		case a.Delete():
			action = reconcile.Delete
		}
		changes = append(changes, stages.Change{Action: action, Target: "output " + name})
	}
	return changes
}

func actionStrings(a tfjson.Actions) []string {
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = string(x)
	}
	return s
}

// checkPlannedOutput fails early when the module has no bootstrap_inventory
// output, or when its planned value is known and breaks the contract, so a
// broken module is caught before any machine is paid for.
func (r *Runner) checkPlannedOutput(plan *tfjson.Plan) error {
	if plan.Config != nil && plan.Config.RootModule != nil {
		if _, ok := plan.Config.RootModule.Outputs[OutputName]; !ok {
			return r.missingOutput()
		}
	}
	oc, ok := plan.OutputChanges[OutputName]
	if !ok || oc == nil || oc.Actions.Delete() || hasUnknown(oc.AfterUnknown) {
		return nil
	}
	b, err := json.Marshal(oc.After)
	if err != nil {
		return fmt.Errorf("terraform plan: output %s: %w", OutputName, err)
	}
	_, err = r.parseOutput(b, "planned")
	return err
}

// hasUnknown reports whether an after_unknown tree marks any value unknown.
func hasUnknown(v any) bool {
	switch v := v.(type) {
	case bool:
		return v
	case []any:
		for _, x := range v {
			if hasUnknown(x) {
				return true
			}
		}
	case map[string]any:
		for _, x := range v {
			if hasUnknown(x) {
				return true
			}
		}
	}
	return false
}

// Apply creates or updates the infrastructure and returns the inventory the
// module outputs.
func (r *Runner) Apply(ctx context.Context) (*inventory.Inventory, error) {
	if err := r.init(ctx); err != nil {
		return nil, err
	}
	if err := r.tf.Apply(ctx, tfexec.LockTimeout(r.lockTimeout)); err != nil {
		return nil, fmt.Errorf("terraform apply: %w", lockHint(err))
	}
	return r.Inventory(ctx)
}

// Inventory reads the bootstrap_inventory output from the state without
// changing anything.
func (r *Runner) Inventory(ctx context.Context) (*inventory.Inventory, error) {
	if err := r.init(ctx); err != nil {
		return nil, err
	}
	outs, err := r.tf.Output(ctx)
	if err != nil {
		return nil, fmt.Errorf("terraform output: %w", err)
	}
	o, ok := outs[OutputName]
	if !ok {
		return nil, r.missingOutput()
	}
	return r.parseOutput(o.Value, "")
}

func (r *Runner) missingOutput() error {
	return fmt.Errorf("terraform module %s has no output %q; a module must output the inventory contract, e.g. output %q { value = jsonencode({version = 1, nodes = [...]}) } (see terraform/README.md)",
		r.module, OutputName, OutputName)
}

// parseOutput reads the output's value: the JSON document as a string (what
// jsonencode gives) or the object itself. A module is not trusted with this
// machine: inventory.Parse refuses a node's "local" field.
func (r *Runner) parseOutput(raw []byte, which string) (*inventory.Inventory, error) {
	source := fmt.Sprintf("terraform output %s of module %s", OutputName, r.module)
	if which != "" {
		source = which + " " + source
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		raw = []byte(s)
	}
	inv, err := inventory.Parse(raw, source)
	if err != nil {
		return nil, err
	}
	return inv, nil
}

// Destroy destroys everything in the state and then checks that the state
// is really empty: whatever is left is still running (and billed), so it is
// an error, never a warning.
func (r *Runner) Destroy(ctx context.Context) error {
	if err := r.init(ctx); err != nil {
		return err
	}
	if err := r.tf.Destroy(ctx, tfexec.LockTimeout(r.lockTimeout)); err != nil {
		return fmt.Errorf("terraform destroy: %w", lockHint(err))
	}
	left, err := r.Resources(ctx)
	if err != nil {
		return fmt.Errorf("after terraform destroy: %w", err)
	}
	if len(left) > 0 {
		return fmt.Errorf("terraform destroy finished but %d resource(s) are still in the state of %s: %s; they may still exist and cost money: run `terraform destroy` there and check the cloud console",
			len(left), r.dir, strings.Join(left, ", "))
	}
	return nil
}

// Resources lists the managed resource instances in the state, read afresh
// from the backend.
func (r *Runner) Resources(ctx context.Context) ([]string, error) {
	if err := r.init(ctx); err != nil {
		return nil, err
	}
	st, err := r.tf.Show(ctx)
	if err != nil {
		return nil, fmt.Errorf("terraform show: %w", err)
	}
	var out []string
	if st.Values != nil {
		collect(st.Values.RootModule, &out)
	}
	sort.Strings(out)
	return out, nil
}

func collect(m *tfjson.StateModule, out *[]string) {
	if m == nil {
		return
	}
	for _, res := range m.Resources {
		if res.Mode == tfjson.ManagedResourceMode {
			*out = append(*out, res.Address)
		}
	}
	for _, c := range m.ChildModules {
		collect(c, out)
	}
}

// lockHint adds what to do when the state is locked by someone else.
func lockHint(err error) error {
	if strings.Contains(err.Error(), "Error acquiring the state lock") {
		return errors.Join(err, errors.New("the state is locked by another run; if that run was killed, release the lock with `terraform force-unlock LOCK_ID` in the working directory"))
	}
	return err
}
