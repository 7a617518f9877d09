package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/platform-bootstrap/bootstrap/internal/statedir"
	"github.com/platform-bootstrap/bootstrap/internal/ui"
)

func newHistoryCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "history [RUN]",
		Short: "List the runs of up, plan and down, or show one run (an id, a unique prefix of one, or \"last\")",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, _, red, err := g.loadConfig()
			if err != nil {
				return err
			}
			dir := g.stateDirFor(cfg)
			runs, err := statedir.LoadRuns(dir)
			if err != nil {
				return &exitError{code: exitFailure, err: fmt.Errorf("run history in %s: %w", dir, err)}
			}
			w := red.Writer(g.stdout)
			defer w.Close()
			if len(args) == 0 {
				if g.output == "json" {
					return json.NewEncoder(w).Encode(runs)
				}
				if len(runs) == 0 {
					fmt.Fprintf(w, "no runs recorded in %s\n", dir)
					return nil
				}
				listRuns(w, runs)
				return nil
			}
			run, err := findRun(runs, args[0])
			if err != nil {
				return &exitError{code: exitUsage, err: err}
			}
			if g.output == "json" {
				return json.NewEncoder(w).Encode(run)
			}
			showRun(w, run)
			return nil
		},
	}
}

// findRun picks the run named by id, a prefix of exactly one id, or "last".
func findRun(runs []statedir.RunRecord, id string) (statedir.RunRecord, error) {
	if id == "last" && len(runs) > 0 {
		return runs[len(runs)-1], nil
	}
	var found []statedir.RunRecord
	for _, r := range runs {
		if r.ID == id {
			return r, nil
		}
		if strings.HasPrefix(r.ID, id) {
			found = append(found, r)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return statedir.RunRecord{}, fmt.Errorf("history: no run %q; `bootstrap history` lists them", id)
	default:
		return statedir.RunRecord{}, fmt.Errorf("history: %q names %d runs (%s, ...); give more of the id", id, len(found), found[0].ID)
	}
}

func listRuns(w io.Writer, runs []statedir.RunRecord) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tCOMMAND\tSTARTED\tDURATION\tOUTCOME\tSTAGES")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Command, r.Started.Local().Format(time.DateTime), took(r), r.Outcome, stageSummary(r.Stages))
	}
	tw.Flush()
}

// stageSummary names the stages that did something, by outcome: the rest
// were unchanged.
func stageSummary(results []statedir.StageResult) string {
	by := map[statedir.Outcome][]string{}
	var order []statedir.Outcome
	for _, s := range results {
		if s.Outcome == statedir.OutcomeUnchanged {
			continue
		}
		if by[s.Outcome] == nil {
			order = append(order, s.Outcome)
		}
		by[s.Outcome] = append(by[s.Outcome], s.Name)
	}
	if len(order) == 0 {
		return "no changes"
	}
	var parts []string
	for _, o := range order {
		parts = append(parts, fmt.Sprintf("%s: %s", o, strings.Join(by[o], ", ")))
	}
	return strings.Join(parts, "; ")
}

func took(r statedir.RunRecord) string {
	if r.Finished.IsZero() {
		return "-"
	}
	return r.Finished.Sub(r.Started).Round(100 * time.Millisecond).String()
}

func showRun(w io.Writer, r statedir.RunRecord) {
	fmt.Fprintf(w, "run %s: %s, started %s, took %s\n", r.ID, r.Outcome, r.Started.Local().Format(time.DateTime), took(r))
	if r.Error != "" {
		fmt.Fprintf(w, "error: %s\n", r.Error)
	}
	ui.Results(w, r.Stages)
	for _, s := range r.Stages {
		if len(s.Changes) == 0 && s.Error == "" {
			continue
		}
		fmt.Fprintf(w, "\n%s (%s):\n", s.Name, s.Outcome)
		for _, c := range s.Changes {
			fmt.Fprintf(w, "  %s\n", ui.ChangeLine(c))
		}
		if s.Error != "" {
			fmt.Fprintf(w, "  error: %s\n", s.Error)
		}
	}
	fmt.Fprintf(w, "\nlog: %s\n", r.LogFile)
}
