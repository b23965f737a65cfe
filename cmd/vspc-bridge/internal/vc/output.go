package vc

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("vc: write JSON: %w", err)
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// writeAuditTable prints one row per serial port (a VM without any gets one
// row of dashes), then the problems.
func writeAuditTable(w io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tHOST\tPORT\tBACKING\tDIRECTION\tSERVICE URI / PATH\tPROXY URI\tCONNECTED\tSTART-CONNECTED\tYIELD-ON-POLL")
	for _, vm := range r.VMs {
		if len(vm.Ports) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\n", vm.Name, orDash(vm.Host))
		}
		for _, p := range vm.Ports {
			target := p.ServiceURI
			if p.Backing != BackingURI {
				target = p.Path
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", vm.Name, orDash(vm.Host), p.Name, p.Backing,
				orDash(p.Direction), orDash(target), orDash(p.ProxyURI), yesNo(p.Connected), yesNo(p.StartConnected), yesNo(p.YieldOnPoll))
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("vc: write table: %w", err)
	}
	return writeProblems(w, r.Problems)
}

// writeProblems prints each problem and its fix, or that there are none.
func writeProblems(w io.Writer, ps []*Problem) error {
	var err error
	pr := func(format string, args ...any) {
		if err == nil {
			_, err = fmt.Fprintf(w, format, args...)
		}
	}
	if len(ps) == 0 {
		pr("\nno problems found\n")
		return err
	}
	pr("\n%d problem(s):\n", len(ps))
	for _, p := range ps {
		pr("%s: %s: %s\n    fix: %s\n", p.where(), p.code(), p.Message, p.Fix)
	}
	if err != nil {
		return fmt.Errorf("vc: write problems: %w", err)
	}
	return nil
}
