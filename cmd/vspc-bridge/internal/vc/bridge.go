package vc

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Bridge is what the vc helpers need to know about the bridge they check VMs
// against. FromConfig adapts the bridge's *configs.Config; tests may use fakes.
type Bridge interface {
	// ProxyURIs are the proxy URIs VMs may name to reach the bridge, e.g.
	// "telnet://192.0.2.10:13370" and "telnets://192.0.2.10:13371". The
	// first is what provision writes by default. A telnets:// entry means the
	// bridge speaks TLS on that port; a host of 0.0.0.0 or :: matches any host.
	ProxyURIs() []string
	// Allowed reports whether [policy] connect_allow permits the bridge to
	// connect to host:port (host is a name or an IP address literal).
	Allowed(host string, port int) bool
	// Route returns the route the bridge would pick for a VM's serial port.
	Route(q RouteQuery) (Route, bool)
	// TLSCert returns the certificate of the bridge's telnets:// listener
	// ([vspc] tls_cert), or nil when the bridge has no TLS listener. A
	// certificate file that cannot be read or parsed is an error.
	TLSCert() (*x509.Certificate, error)
}

// RouteQuery identifies a VM's serial port to Bridge.Route.
type RouteQuery struct {
	ServiceURI string
	VMName     string
	VCUUID     string // the VM's config.instanceUuid, which ESXi sends as VM-VC-UUID
}

// Route is the part of a configured route the audit reports.
type Route struct {
	Name   string
	Device string // e.g. "tcp://198.51.100.5:4001" or "/dev/ttyUSB0"
}

// endpoint is a parsed telnet/telnets/tcp URI.
type endpoint struct {
	Scheme string
	Host   string // without brackets; "" for "telnet://:PORT"
	Port   int
	User   bool // the URI carries user information
}

func (ep endpoint) hostPort() string {
	return net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port))
}

// addr returns the host as an IP address, if it is one.
func (ep endpoint) addr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(ep.Host)
	return a.Unmap(), err == nil
}

// parseEndpoint parses "scheme://host:port". A URI without a scheme ("host:port",
// as govc's default "localhost:0") is taken as tcp. The port is required.
func parseEndpoint(s string) (endpoint, error) {
	if !strings.Contains(s, "://") {
		s = "tcp://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return endpoint{}, err
	}
	if u.Opaque != "" || u.Host == "" && u.User == nil {
		return endpoint{}, fmt.Errorf("%q has no host:port", s)
	}
	ps := u.Port()
	if ps == "" {
		return endpoint{}, fmt.Errorf("%q has no port", s)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return endpoint{}, fmt.Errorf("%q has a bad port", s)
	}
	return endpoint{
		Scheme: strings.ToLower(u.Scheme),
		Host:   strings.ToLower(u.Hostname()),
		Port:   port,
		User:   u.User != nil,
	}, nil
}

// sameHost compares two hosts the way the audit can without DNS: textually,
// except that an unspecified bridge address (0.0.0.0, ::) matches any host.
func sameHost(bridge, vm string) bool {
	if a, err := netip.ParseAddr(bridge); err == nil && a.IsUnspecified() {
		return true
	}
	if a, err := netip.ParseAddr(bridge); err == nil {
		if b, err := netip.ParseAddr(vm); err == nil {
			return a.Unmap() == b.Unmap()
		}
	}
	return strings.EqualFold(bridge, vm)
}
