// Package vc implements the govmomi helpers of vspc-bridge:
//
//	vspc-bridge vc audit     [-config FILE] [VM…]
//	vspc-bridge vc provision -vm VM -direction client|server -service URI [-proxy URI] [-pin=false] [-port N] [-dry-run]
//	vspc-bridge vc preflight [-config FILE] [-fix] [HOST…]
//
// They talk to vCenter (or a single ESXi host) through the vSphere API with govc's
// connection conventions: GOVC_URL, GOVC_USERNAME, GOVC_PASSWORD, GOVC_INSECURE and
// GOVC_DATACENTER, or the flags -u, -username, -password, -k and -dc. Every
// subcommand prints a table for people, or JSON with -json, and exits 0 when all is
// well, 1 when it found problems and 2 on usage or connection errors.
//
// Sources: "Using a Proxy with vSphere Virtual Serial Ports" (seed 000), sections
// "Backing Options and Backing Information for Network Serial Ports", "Determining
// Backing Options" and "Creating a Virtual Machine with a Network Serial Port"; the
// field report on ESXi's remoteSerialPort firewall ruleset (seed 001); and
// ../shared/notes/device-peers.md §4 and §6 for the govmomi API.
//
// # What is checked
//
// audit reads each VM's VirtualSerialPort devices (config.hardware.device) and their
// backing: VirtualSerialPortURIBackingInfo (direction, serviceURI, proxyURI), file,
// pipe or host device. A URI backing without a proxy URI is wired straight to the
// network and ESXi refuses to vMotion such a VM; a proxy URI must name this bridge
// (Bridge.ProxyURI), with the same telnet/telnets scheme, and may not carry a
// user/password (the seed: "You cannot include a user/password sequence in the
// proxy URI"). For direction client the service URI must match a route or be
// permitted by connect_allow, otherwise the bridge answers WONT-PROXY. Two VMs must
// not claim the same device. A port should be connected and start connected. The
// host must offer the URI backing option: QueryConfigOptionEx on the VM's
// environment browser for the VM's host, looking for a VirtualSerialPortOption
// whose backing options include a VirtualDeviceURIBackingOption.
//
// preflight reads each host's firewall (config.firewall through the
// HostFirewallSystem): VMs that use a proxy need the ruleset "vSPC" (outbound TCP,
// "VM serial port connected to vSPC"), VMs wired straight to the network need
// "remoteSerialPort" ("VM serial port connected over network"). It checks the
// ruleset is enabled, that its allowed-IP list admits the peer, and that an enabled
// outbound TCP rule covers the peer's port (object.HostFirewallRulesetList.ByRule:
// an EndPort of 0 means the single port Port).
//
// A telnets:// proxy URI may pin the bridge's certificate the way ESXi and
// OpenStack Nova do it, "telnets://host:port#thumbprint=<SHA-1 of the
// certificate>" (configs.TelnetsURI). When the bridge has a TLS certificate
// ([vspc] tls_cert, Bridge.TLSCert), a pin that is not its thumbprint is a
// problem (compared as SHA-1 bytes: any case, colons optional), and so, as a
// warning, is a telnets:// URI without a pin when the certificate is
// self-signed: ESXi can then verify the bridge only if it trusts the
// certificate some other way.
//
// provision adds or changes a URI-backed serial port with ReconfigVM_Task, after
// running the audit's checks on the port it is about to write. With a TLS
// certificate its default proxy URI is the bridge's pinned telnets:// URI, and
// an explicit telnets:// -proxy to the bridge without a pin gets one (with a
// note in the output) unless -pin=false.
package vc
