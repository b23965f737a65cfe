package vc

import (
	"slices"
	"strings"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

// TestCheckPort is the audit's per-port rule table, without vCenter.
func TestCheckPort(t *testing.T) {
	tlsBridge := testBridge()
	tlsBridge.uris = []string{bridgeURI, "telnets://192.0.2.10:13371"}
	// A bridge with TLS and a self-signed certificate, and one whose
	// certificate a CA signed.
	selfCert, _ := newCert(t, "192.0.2.10", nil, nil, false)
	caCert, caKey := newCert(t, "lab CA", nil, nil, true)
	leafCert, _ := newCert(t, "192.0.2.10", caCert, caKey, false)
	selfSigned := tlsBridge
	selfSigned.cert = selfCert
	caSigned := tlsBridge
	caSigned.cert = leafCert
	tp := configs.Thumbprint(selfCert.Raw)
	bare := strings.ToLower(strings.ReplaceAll(tp, ":", ""))
	anyHost := testBridge()
	anyHost.uris = []string{"telnet://0.0.0.0:13370"}
	uri := func(dir, service, proxy string) Port {
		return Port{Name: "serialport-9000", Key: 9000, Backing: BackingURI, Direction: dir, ServiceURI: service, ProxyURI: proxy, Connected: true, StartConnected: true}
	}
	for _, tc := range []struct {
		name  string
		b     Bridge
		port  Port
		power string
		codes []Code
	}{
		{"good client via route", testBridge(), uri("client", "lab-switch", bridgeURI), "poweredOn", nil},
		{"good client via connect_allow", testBridge(), uri("client", "tcp://198.51.100.9:4010", bridgeURI), "poweredOn", nil},
		{"good server, no route needed", testBridge(), uri("server", "anything", bridgeURI), "poweredOn", nil},
		{"bridge host in upper case", testBridge(), uri("server", "x", "TELNET://192.0.2.10:13370"), "poweredOn", nil},
		{"no proxy", testBridge(), uri("client", "telnet://198.51.100.6:4001", ""), "poweredOn", []Code{CodeNoProxy}},
		{"no proxy, not allowed", testBridge(), uri("client", "telnet://203.0.113.9:23", ""), "poweredOn", []Code{CodeNoProxy, CodeNoRoute}},
		{"service not host:port", testBridge(), uri("client", "no-such-route", bridgeURI), "poweredOn", []Code{CodeNoRoute}},
		// The bridge's own parser decides what a VM may name:
		{"service without a scheme", testBridge(), uri("client", "198.51.100.9:4010", bridgeURI), "poweredOn", []Code{CodeNoRoute}},
		{"service a local device", testBridge(), uri("client", "/dev/ttyS0", bridgeURI), "poweredOn", []Code{CodeNoRoute}},
		{"service with a default port", testBridge(), uri("client", "nport://198.51.100.9", bridgeURI), "poweredOn", nil},
		{"proxy not telnet", testBridge(), uri("server", "x", "http://192.0.2.10:13370"), "poweredOn", []Code{CodeBadURI}},
		{"proxy without port", testBridge(), uri("server", "x", "telnet://192.0.2.10"), "poweredOn", []Code{CodeBadURI}},
		{"bad direction", testBridge(), uri("sideways", "x", bridgeURI), "poweredOn", []Code{CodeBadDirection}},
		{"user only", testBridge(), uri("server", "x", "telnet://admin@192.0.2.10:13370"), "poweredOn", []Code{CodeProxyUserinfo}},
		{"other port", testBridge(), uri("server", "x", "telnet://192.0.2.10:13371"), "poweredOn", []Code{CodeProxyNotBridge}},
		{"telnets, bridge without TLS", testBridge(), uri("server", "x", telnetsURI), "poweredOn", []Code{CodeProxyTLS}},
		{"telnets to the TLS port", tlsBridge, uri("server", "x", "telnets://192.0.2.10:13371"), "poweredOn", nil},
		{"telnets to the plain port", tlsBridge, uri("server", "x", telnetsURI), "poweredOn", []Code{CodeProxyTLS}},
		{"telnet to the TLS port", tlsBridge, uri("server", "x", "telnet://192.0.2.10:13371"), "poweredOn", []Code{CodeProxyTLS}},
		{"pinned", selfSigned, uri("server", "x", bridgeTLS+"#thumbprint="+tp), "poweredOn", nil},
		{"pinned, lower case", selfSigned, uri("server", "x", bridgeTLS+"#thumbprint="+strings.ToLower(tp)), "poweredOn", nil},
		{"pinned, no colons", selfSigned, uri("server", "x", bridgeTLS+"#thumbprint="+bare), "poweredOn", nil},
		{"pinned, key in upper case", selfSigned, uri("server", "x", bridgeTLS+"#THUMBPRINT="+tp), "poweredOn", nil},
		{"pinned to another certificate", selfSigned, uri("server", "x", bridgeTLS+"#thumbprint="+wrongTP), "poweredOn", []Code{CodeProxyThumbprint}},
		{"pinned to the CA's certificate", caSigned, uri("server", "x", bridgeTLS+"#thumbprint="+configs.Thumbprint(caCert.Raw)), "poweredOn", []Code{CodeProxyThumbprint}},
		{"pin not a SHA-1", selfSigned, uri("server", "x", bridgeTLS+"#thumbprint="+bare+"00"), "poweredOn", []Code{CodeProxyThumbprint}},
		{"empty pin", selfSigned, uri("server", "x", bridgeTLS+"#thumbprint="), "poweredOn", []Code{CodeProxyThumbprint}},
		{"unpinned, self-signed", selfSigned, uri("server", "x", bridgeTLS), "poweredOn", []Code{CodeProxyUnpinned}},
		{"unpinned, CA-signed", caSigned, uri("server", "x", bridgeTLS), "poweredOn", nil},
		{"pinned, CA-signed", caSigned, uri("server", "x", bridgeTLS+"#thumbprint="+configs.Thumbprint(leafCert.Raw)), "poweredOn", nil},
		{"pinned URI to the plain port", selfSigned, uri("server", "x", telnetsURI+"#thumbprint="+tp), "poweredOn", []Code{CodeProxyTLS}},
		{"unspecified bridge host matches any host", anyHost, uri("server", "x", "telnet://bridge.example:13370"), "poweredOn", nil},
		{"powered off, not connected", testBridge(), func() Port { p := uri("server", "x", bridgeURI); p.Connected = false; return p }(), "poweredOff", nil},
		{"powered on, not connected", testBridge(), func() Port { p := uri("server", "x", bridgeURI); p.Connected = false; return p }(), "poweredOn", []Code{CodeNotConnected}},
		{"not start-connected", testBridge(), func() Port { p := uri("server", "x", bridgeURI); p.StartConnected = false; return p }(), "poweredOff", []Code{CodeNotStartConnected}},
		{"file backing is not checked", testBridge(), Port{Name: "serialport-9001", Backing: BackingFile, Path: "[ds] x.log"}, "poweredOn", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br, err := parseBridge(tc.b)
			if err != nil {
				t.Fatal(err)
			}
			a := &auditor{b: tc.b, br: br}
			vm := &VM{Name: "vm", PowerState: tc.power}
			var got []Code
			for _, p := range a.checkPort(vm, &tc.port) {
				got = append(got, p.Code)
				if p.Fix == "" || p.Message == "" {
					t.Errorf("%s without message or fix: %+v", p.Code, p)
				}
			}
			if !slices.Equal(got, tc.codes) {
				t.Errorf("codes %v, want %v", got, tc.codes)
			}
		})
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"DC0_H0_VM0":            "DC0_H0_VM0",
		"my vm":                 "'my vm'",
		"it's":                  `'it'\''s'`,
		"":                      "''",
		"telnet://:33233":       "telnet://:33233",
		"/DC0/vm/folder/VM (1)": "'/DC0/vm/folder/VM (1)'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}
