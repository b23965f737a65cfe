package vc

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/vmware/govmomi/vim25"
)

const preflightHelp = `Checks every ESXi host (or the hosts named) for the firewall rulesets its
VMs' serial ports need:

  vSPC              "VM serial port connected to vSPC": outbound TCP, any
                    port. Needed by VMs whose serial port names a proxy URI
                    (this bridge).
  remoteSerialPort  "VM serial port connected over network": outbound TCP,
                    any port; inbound TCP 23 and 1024-65535. Needed by VMs
                    wired straight to the network, which are also reported:
                    vMotion will be refused until the bridge is put in
                    between (the fix prints the vc provision command).

For each connection: is the ruleset enabled; does its allowed-IP list admit
the peer (the bridge, or the device server); does an enabled TCP rule cover
the port (a rule with end port 0 covers just its one port); and is the host
firewall on (its default policy blocks traffic).

-fix enables each needed ruleset that is disabled and then refreshes the
host's firewall, printing each change. It never rewrites an allowed-IP list:
VMware advises against narrowing these rulesets' lists; a list that leaves
out the bridge is reported for you to change.

Known pitfall (field report, ESXi 5.0 Update 1): with remoteSerialPort
enabled and its outbound rule covering 0-65535, connections from the host to
a device server's port 4001 were still dropped; only a custom ruleset with an
explicit single-port outbound rule (porttype dst, port 4001) let them
through, following VMware KB 2008226. ESXi 5.1 GA did not need it. The
vSphere API cannot show this: preflight reports the rule as covering the
port. If a 5.0 U1 host still drops the connection, add the single-port rule
by hand.

Exit status 1 when problems were found (after -fix: problems left).
`

func runPreflight(ctx context.Context, args []string, e env) int {
	c := newCommand("preflight", "vspc-bridge vc preflight [-fix] [flags] [HOST…]", preflightHelp, e, true)
	var fix bool
	c.fs.BoolVar(&fix, "fix", false, "enable the needed rulesets and refresh the firewall")
	return execute(ctx, c, args, e, task[*PreflightReport]{
		do: func(ctx context.Context, cl *vim25.Client, b Bridge) (*PreflightReport, error) {
			r, err := Preflight(ctx, cl, b, PreflightOptions{Datacenter: c.conn.dc, Hosts: c.fs.Args(), Fix: fix, Config: c.cfg})
			if err != nil && r != nil {
				// What -fix changed before it failed, ahead of the error.
				for _, ch := range r.Changes {
					fmt.Fprintln(e.stderr, ch)
				}
			}
			return r, err
		},
		table: writePreflightTable,
	})
}

// writePreflightTable prints the changes -fix made, one row per host and
// needed connection, then the problems.
func writePreflightTable(w io.Writer, r *PreflightReport) error {
	for _, ch := range r.Changes {
		if _, err := fmt.Fprintln(w, ch); err != nil {
			return fmt.Errorf("vc: write: %w", err)
		}
	}
	if len(r.Changes) > 0 {
		if _, err := fmt.Fprintln(w); err != nil {
			return fmt.Errorf("vc: write: %w", err)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tFIREWALL\tRULESET\tENABLED\tALLOWED IPS\tDIRECTION\tPEER\tADMITS\tCOVERED BY\tVMS")
	for _, h := range r.Hosts {
		if len(h.Needs) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t-\t(no VM here uses a network serial port)\n", h.Name, h.Firewall)
		}
		for _, n := range h.Needs {
			enabled := yesNo(n.Enabled)
			if !n.Exists {
				enabled = "missing"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, h.Firewall, n.Ruleset, enabled, n.AllowedIPs,
				n.Direction, n.Peer, n.Admits, orDash(strings.Join(n.CoveredBy, ",")), strings.Join(n.VMs, ", "))
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("vc: write table: %w", err)
	}
	return writeProblems(w, r.Problems)
}
