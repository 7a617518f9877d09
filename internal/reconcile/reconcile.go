// Package reconcile is how every stage decides what to change: it finds
// what is there, compares it with what the configuration wants, and records
// each difference as a Change. The same code path plans and applies: a
// Plan made with Apply set also makes each change as it records it, so plan
// and apply can never disagree about what needs doing.
package reconcile

import "fmt"

// Action is what a change does to its target.
type Action string

// The actions, in the words plan and apply show.
const (
	Create    Action = "create"
	Update    Action = "update"
	Delete    Action = "delete"
	Replace   Action = "replace"
	Start     Action = "start"
	Restart   Action = "restart"
	Stop      Action = "stop"
	Install   Action = "install"
	Init      Action = "init"
	Unseal    Action = "unseal"
	Bootstrap Action = "bootstrap"
	Generate  Action = "generate"
	Enable    Action = "enable"
	Join      Action = "join"
	Register  Action = "register"
	Record    Action = "record"
	Store     Action = "store"
	Revoke    Action = "revoke"
	Reset     Action = "reset"
	Restore   Action = "restore"
	Wait      Action = "wait"
	Check     Action = "check"
)

// Mark is the one-character sign a plan shows for the action: + adds, ~
// changes in place, - removes, ! destroys data that cannot be got back.
func (a Action) Mark() string {
	switch a {
	case Create, Start, Generate, Bootstrap, Init, Install, Register, Join, Enable:
		return "+"
	case Delete, Stop, Revoke:
		return "-"
	case Replace:
		return "-/+"
	case Reset:
		return "!"
	default:
		return "~"
	}
}

// Change is one difference between the configuration and the live system.
type Change struct {
	Action Action `json:"action"`
	Target string `json:"target"` // what is changed, e.g. "vault mount consul/root-ca"
	Detail string `json:"detail,omitempty"`
}

func (c Change) String() string {
	s := string(c.Action) + " " + c.Target
	if c.Detail != "" {
		s += " (" + c.Detail + ")"
	}
	return s
}

// Plan records the changes one stage finds. With Apply set, Do also makes
// each change before it records it.
type Plan struct {
	Apply   bool
	Changes []Change
	// Before, if set, is told of each change just before it is made: a
	// stage shows it as a step.
	Before func(Change)
}

// Do records a change and, when applying, makes it with do. A nil do
// records a change that another step makes.
func (p *Plan) Do(a Action, target, detail string, do func() error) error {
	c := Change{Action: a, Target: target, Detail: detail}
	if p.Apply && do != nil {
		if p.Before != nil {
			p.Before(c)
		}
		if err := do(); err != nil {
			return fmt.Errorf("%s %s: %w", a, target, err)
		}
	}
	p.Changes = append(p.Changes, c)
	return nil
}

// Planned records, while planning only, a change that an earlier planned
// change makes necessary; applying finds and makes it in its own step,
// once the earlier change is real.
func (p *Plan) Planned(a Action, target, detail string) {
	if !p.Apply {
		p.Changes = append(p.Changes, Change{Action: a, Target: target, Detail: detail})
	}
}
