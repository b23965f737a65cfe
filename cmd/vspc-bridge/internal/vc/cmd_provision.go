package vc

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmware/govmomi/vim25"
)

const provisionHelp = `Adds a URI-backed serial port to a VM, or changes an existing one, with
ReconfigVM_Task: direction, service URI, proxy URI (default: this bridge's
address from the config), start-connected and connected set.

TLS: when the bridge has a telnets listener ([vspc] tls_listen with
tls_cert), the default proxy URI is that listener with the certificate
pinned the way ESXi (and OpenStack Nova) pin it:

  telnets://HOST:PORT#thumbprint=<SHA-1 of tls_cert, AB:CD:… form>

as "vspc-bridge gen-cert" prints it. A tls_cert that cannot be read is an
error (exit status 2), never a silent plain telnet:// URI. A -proxy that
names the bridge's telnets listener without #thumbprint= gets the bridge's
thumbprint added, and the output says so ("note:"; "notes" in JSON).
-pin=false writes telnets:// URIs without the pin, for a CA-signed
certificate the ESXi hosts trust by other means (with a self-signed
certificate the audit flags an unpinned URI, so it is refused). A -proxy
that pins a thumbprint is written as given, if it is the bridge's.

Which port: -port KEY (the number in serialport-KEY, as vc audit and
govc device.ls print it) names one, whatever its backing. Without -port, a
URI-backed port with the same service URI is changed, else the VM's only
URI-backed port, else a new port is added; file, pipe and device ports are
left alone.

The port is checked as vc audit would check it (proxy is this bridge, no
user/password, telnet/telnets matches the bridge, a telnets pin is the
bridge's certificate, a route or connect_allow for direction client, no
other VM on the same device, the host offers URI backing). If anything
would be flagged, warnings included, nothing is written and the exit
status is 1. -dry-run prints the change without writing it.
`

func runProvision(ctx context.Context, args []string, e env) int {
	c := newCommand("provision", "vspc-bridge vc provision -vm VM -direction client|server -service URI [-proxy URI] [-pin=false] [-port N] [-dry-run] [flags]", provisionHelp, e, true)
	var req ProvisionRequest
	var port int
	c.fs.StringVar(&req.VM, "vm", "", "the `VM` (name or inventory path)")
	c.fs.StringVar(&req.Direction, "direction", "", "client (the VM connects out) or server (the VM accepts)")
	c.fs.StringVar(&req.Service, "service", "", "service `URI` the VM sends the bridge in DO-PROXY")
	c.fs.StringVar(&req.Proxy, "proxy", "", "proxy `URI` (default: the bridge's address from the config)")
	c.fs.IntVar(&port, "port", 0, "device key `N` of the serial port to change (serialport-N)")
	c.fs.BoolVar(&req.DryRun, "dry-run", false, "print the change, write nothing")
	pin := true
	c.fs.BoolVar(&pin, "pin", true, "pin the bridge's TLS certificate in a telnets:// proxy URI (#thumbprint=)")
	return execute(ctx, c, args, e, task[*Change]{
		check: func() error {
			switch {
			case c.fs.NArg() > 0:
				return fmt.Errorf("vc: provision takes no arguments, got %q", c.fs.Args())
			case req.VM == "":
				return errors.New("vc: -vm is required")
			case req.Direction != "client" && req.Direction != "server":
				return errors.New("vc: -direction must be client or server")
			case req.Service == "":
				return errors.New("vc: -service is required")
			case port < 0 || port > 1<<31-1:
				return errors.New("vc: -port must be a device key")
			}
			return nil
		},
		do: func(ctx context.Context, cl *vim25.Client, b Bridge) (*Change, error) {
			req.Port = int32(port)
			req.Unpinned = !pin
			return Provision(ctx, cl, b, c.conn.dc, req, c.cfg)
		},
		table: writeChange,
	})
}
