package vc

import (
	"crypto/x509"
	"fmt"
	"net"
	"slices"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// FromConfig returns the Bridge a config describes.
//
// Its proxy URIs: Config.ProxyURI first; then the plain listener
// ([vspc] listen) and the TLS listener ([vspc] tls_listen) as telnet:// and
// telnets:// URIs — with the host of proxy_uri when that is set, because that
// is the name VMs use, and with the listen host otherwise.
func FromConfig(c *configs.Config) Bridge { return configBridge{c} }

// LoadBridge loads the bridge config at path with configs.Load ("" = the
// built-in example config, configs.Default).
func LoadBridge(path string) (Bridge, error) {
	if path == "" {
		return FromConfig(configs.Default()), nil
	}
	c, err := configs.Load(path)
	if err != nil {
		return nil, fmt.Errorf("vc: %w", err)
	}
	return FromConfig(c), nil
}

type configBridge struct{ c *configs.Config }

func (b configBridge) ProxyURIs() []string {
	uris := []string{b.c.ProxyURI()}
	host := ""
	if b.c.VSPC.ProxyURI != "" {
		if ep, err := parseEndpoint(b.c.VSPC.ProxyURI); err == nil {
			host = ep.Host
		}
	}
	add := func(scheme, listen string) {
		if listen == "" {
			return
		}
		h, p, err := net.SplitHostPort(listen)
		if err != nil {
			return
		}
		if host != "" {
			h = host
		}
		if u := scheme + "://" + net.JoinHostPort(h, p); !slices.Contains(uris, u) {
			uris = append(uris, u)
		}
	}
	add("telnet", b.c.VSPC.Listen)
	add("telnets", b.c.VSPC.TLSListen)
	return uris
}

func (b configBridge) Allowed(host string, port int) bool {
	return b.c.Allow().AllowName(host, port)
}

func (b configBridge) Route(q RouteQuery) (Route, bool) {
	r, ok := b.c.MatchRoute(configs.RouteQuery{ServiceURI: q.ServiceURI, VMName: q.VMName, VCUUID: q.VCUUID})
	if !ok {
		return Route{}, false
	}
	return Route{Name: r.Name, Device: deviceEndpoint(r.Target())}, true
}

// deviceEndpoint names the device a route joins by where it is, as the
// audit compares and shows devices: the raw-TCP URI for tcp:// and
// nport:// alike, without the line settings of a query.
func deviceEndpoint(t target.Target) string {
	if t.Kind == target.KindNPort {
		t.Kind, t.CmdPort = target.KindTCP, 0 // the data port is where the device is
	}
	t.Settings = rfc2217.Settings{}
	return t.String()
}

// TLSCert reads [vspc] tls_cert (relative to the working directory, as the
// bridge itself reads it) when [vspc] tls_listen is set.
func (b configBridge) TLSCert() (*x509.Certificate, error) {
	if b.c.VSPC.TLSListen == "" || b.c.VSPC.TLSCert == "" {
		return nil, nil
	}
	c, err := configs.CertFile(b.c.VSPC.TLSCert)
	if err != nil {
		return nil, fmt.Errorf("vc: [vspc] tls_cert: %w", err)
	}
	return c, nil
}
