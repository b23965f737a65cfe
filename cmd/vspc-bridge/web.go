package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/web"
)

// kindWeb is the web console's listener kind in status.
const kindWeb = "web"

// webConsole is the running web console ([web] listen).
type webConsole struct {
	srv    *web.Server
	br     *bridge.Bridge
	addr   string
	url    string
	tls    bool
	cert   atomic.Pointer[tls.Certificate] // served (GetCertificate); a reload may replace it
	cancel context.CancelFunc
	done   chan error

	scrollback configs.Size // [web] watch_scrollback in force; only apply touches it (under the daemon's lock)
}

// startWeb binds [web] listen and serves the web console on it; it
// returns nil when the console is off. A reload applies what it can of
// [web] (apply).
func startWeb(cfg *configs.Config, log *slog.Logger, hub *remote.Hub, br *bridge.Bridge, srv *vspc.Server) (*webConsole, error) {
	w := cfg.Web
	if w.Listen == "" {
		return nil, nil
	}
	wc := &webConsole{br: br, done: make(chan error, 1), scrollback: w.WatchScrollback}
	var tlsConf *tls.Config
	if w.TLS() {
		c, err := loadKeyPair(w.TLSCert, w.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("[web] tls_cert/tls_key: %w", err)
		}
		wc.tls = true
		wc.cert.Store(c)
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return wc.cert.Load(), nil
		}}
	}
	// Ports joined to a device keep their recent traffic for watchers
	// (links opened from now on: the web console starts before any VM).
	br.SetTapHistory(int(w.WatchScrollback))
	ws, err := web.New(web.Config{
		Config: cfg, Consoles: web.HubConsoles(hub), Ports: srv.Ports, Devices: br.Devices, Taps: br,
		Logger: log.With("component", "web"),
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", w.Listen)
	if err != nil {
		return nil, fmt.Errorf("[web] listen: %w", err)
	}
	wc.srv, wc.addr = ws, ln.Addr().String()
	wc.url = admin.BaseURL(wc.addr, tlsConf != nil) + "/"
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wc.cancel = cancel
	go func() { wc.done <- ws.Serve(ctx, ln) }()
	log.Info("web console listening", "url", wc.url, "tls", tlsConf != nil)
	return wc, nil
}

// apply applies a reloaded config's [web] table as far as a running
// console can (web.Server.SetConfig; cert, when not nil, is its new
// certificate, read by prepare): it returns what changed and the keys
// that take a restart.
func (wc *webConsole) apply(cfg *configs.Config, cert *tls.Certificate) (changes, restart []string) {
	applied, restart := wc.srv.SetConfig(cfg)
	for _, k := range applied {
		changes = append(changes, k+" changed")
	}
	if n := cfg.Web.WatchScrollback; n != wc.scrollback {
		wc.scrollback = n
		wc.br.SetTapHistory(int(n))
		changes = append(changes, "web.watch_scrollback changed (ports joined from now on)")
	}
	if cert != nil {
		if old := wc.cert.Swap(cert); configs.LeafThumbprint(old) != configs.LeafThumbprint(cert) {
			changes = append(changes, "web certificate: thumbprint "+configs.LeafThumbprint(cert))
		}
	}
	return changes, restart
}

// listener describes the console for status.
func (wc *webConsole) listener() admin.Listener {
	l := admin.Listener{Kind: kindWeb, Addr: wc.addr, URI: wc.url}
	if c := wc.cert.Load(); wc.tls && c != nil && c.Leaf != nil {
		l.CertNotAfter = c.Leaf.NotAfter
		l.Thumbprint = configs.LeafThumbprint(c)
	}
	return l
}

// stop closes the listener and every console, and waits.
func (wc *webConsole) stop(log *slog.Logger) {
	if wc == nil {
		return
	}
	wc.cancel()
	if err := <-wc.done; err != nil && !errors.Is(err, net.ErrClosed) {
		log.Error("web console stopped", "err", err)
	}
}
