package vc

import (
	"context"

	"github.com/vmware/govmomi/vim25"
)

const auditHelp = `Lists every VM (or the VMs named: names, inventory paths or globs, as govc
takes them) with its virtual serial ports: backing kind (uri, file, pipe,
device), direction, service URI, proxy URI, connected, start-connected and
yield-on-poll. Then every problem found, each with its fix:

  no-proxy                 network backing without a proxy URI (vMotion refused)
  proxy-not-bridge         the proxy URI is not this bridge's address
  proxy-tls                telnets:// against a bridge without TLS, or the reverse
  proxy-thumbprint         telnets:// pins (#thumbprint=) a certificate that is not
                           the bridge's tls_cert: ESXi refuses the handshake
  proxy-unpinned           (warning) telnets:// pins no certificate and the
                           bridge's is self-signed: ESXi must trust it some other way
  proxy-userinfo           a user/password inside the proxy URI
  bad-uri, bad-direction   a proxy URI or direction ESXi cannot use
  no-route                 direction client: the service URI matches no route
                           and connect_allow does not permit it
  device-shared            two VMs claim the same device
  not-connected            a powered-on VM's port is not connected
  not-start-connected      the port will not connect at the next power-on
  uri-backing-unsupported  the VM's host offers no URI backing (QueryConfigOption)

Thumbprints compare as SHA-1 in any case, with or without colons. Warnings
count as problems. Exit status 1 when problems were found.
`

func runAudit(ctx context.Context, args []string, e env) int {
	c := newCommand("audit", "vspc-bridge vc audit [flags] [VM…]", auditHelp, e, true)
	return execute(ctx, c, args, e, task[*Report]{
		do: func(ctx context.Context, cl *vim25.Client, b Bridge) (*Report, error) {
			return Audit(ctx, cl, b, Options{Datacenter: c.conn.dc, VMs: c.fs.Args(), Config: c.cfg})
		},
		table: writeAuditTable,
	})
}
