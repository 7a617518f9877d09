package nomadjob

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	nomadapi "github.com/hashicorp/nomad/api"
)

// Diff types of Nomad's plan.
const (
	diffNone    = "None"
	diffAdded   = "Added"
	diffDeleted = "Deleted"
	diffEdited  = "Edited"
)

// Changed reports whether a plan would change the job.
func Changed(resp *nomadapi.JobPlanResponse) bool {
	return resp.Diff != nil && resp.Diff.Type != diffNone
}

// Added reports whether a plan would create the job.
func Added(resp *nomadapi.JobPlanResponse) bool {
	return resp.Diff != nil && resp.Diff.Type == diffAdded
}

// Summary says in one line what a plan changes: "new job", or the changed
// job fields and groups with their changed tasks ("group web (server)").
func Summary(d *nomadapi.JobDiff) string {
	switch {
	case d == nil || d.Type == diffNone:
		return "no changes"
	case d.Type == diffAdded:
		return "new job"
	}
	var parts []string
	for _, f := range d.Fields {
		if f.Type != diffNone {
			parts = append(parts, f.Name)
		}
	}
	for _, o := range d.Objects {
		if o.Type != diffNone {
			parts = append(parts, o.Name)
		}
	}
	for _, g := range d.TaskGroups {
		if g.Type == diffNone {
			continue
		}
		var tasks []string
		for _, t := range g.Tasks {
			if t.Type != diffNone {
				tasks = append(tasks, t.Name)
			}
		}
		s := "group " + g.Name
		if len(tasks) > 0 {
			s += " (" + strings.Join(tasks, ", ") + ")"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return strings.ToLower(d.Type)
	}
	return strings.Join(parts, "; ")
}

// FormatDiff renders a plan's job diff like `nomad job plan` does, without
// colour: one line per changed field, "+" added, "-" deleted, "+/-" edited,
// nested objects indented, unchanged fields left out. Like the nomad CLI
// without -verbose, a job, group or task that is added or deleted as a
// whole is one line: its every field (mostly defaults) would drown the
// output.
func FormatDiff(d *nomadapi.JobDiff) string {
	if d == nil || d.Type == diffNone {
		return "no changes"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s Job: %q\n", mark(d.Type), d.ID)
	if d.Type == diffEdited {
		writeFields(&b, d.Fields, 1)
		writeObjects(&b, d.Objects, 1)
	}
	for _, tg := range d.TaskGroups {
		if tg.Type == diffNone && len(tg.Updates) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s Task Group: %q%s\n", mark(tg.Type), tg.Name, updates(tg.Updates))
		if tg.Type == diffEdited {
			writeFields(&b, tg.Fields, 1)
			writeObjects(&b, tg.Objects, 1)
		}
		for _, t := range tg.Tasks {
			if t.Type == diffNone {
				continue
			}
			fmt.Fprintf(&b, "  %s Task: %q%s\n", mark(t.Type), t.Name, annotations(t.Annotations))
			if t.Type == diffEdited {
				writeFields(&b, t.Fields, 2)
				writeObjects(&b, t.Objects, 2)
			}
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

func writeFields(b *strings.Builder, fields []*nomadapi.FieldDiff, depth int) {
	ind := strings.Repeat("  ", depth)
	for _, f := range fields {
		var val string
		switch f.Type {
		case diffNone:
			continue
		case diffAdded:
			val = fmt.Sprintf("%q", f.New)
		case diffDeleted:
			val = fmt.Sprintf("%q", f.Old)
		default:
			val = fmt.Sprintf("%q => %q", f.Old, f.New)
		}
		fmt.Fprintf(b, "%s%s %s: %s%s\n", ind, mark(f.Type), f.Name, val, annotations(f.Annotations))
	}
}

func writeObjects(b *strings.Builder, objs []*nomadapi.ObjectDiff, depth int) {
	ind := strings.Repeat("  ", depth)
	for _, o := range objs {
		if o.Type == diffNone {
			continue
		}
		fmt.Fprintf(b, "%s%s %s {\n", ind, mark(o.Type), o.Name)
		writeFields(b, o.Fields, depth+1)
		writeObjects(b, o.Objects, depth+1)
		fmt.Fprintf(b, "%s}\n", ind)
	}
}

func mark(t string) string {
	switch t {
	case diffAdded:
		return "+"
	case diffDeleted:
		return "-"
	case diffEdited:
		return "+/-"
	}
	return " "
}

func annotations(a []string) string {
	if len(a) == 0 {
		return ""
	}
	return " (" + strings.Join(a, ", ") + ")"
}

// updates renders a task group's scheduler annotations: "(1 create, 1
// ignore)".
func updates(u map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(u)) {
		if u[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", u[k], k))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
