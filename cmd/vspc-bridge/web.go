package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"

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
	addr   string
	url    string
	cancel context.CancelFunc
	done   chan error
}

// startWeb binds [web] listen and serves the web console on it; it
// returns nil when the console is off. [web] changes take a restart.
func startWeb(cfg *configs.Config, log *slog.Logger, hub *remote.Hub, br *bridge.Bridge, srv *vspc.Server) (*webConsole, error) {
	w := cfg.Web
	if w.Listen == "" {
		return nil, nil
	}
	var tlsConf *tls.Config
	if w.TLS() {
		c, err := loadKeyPair(w.TLSCert, w.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("[web] tls_cert/tls_key: %w", err)
		}
		tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*c}}
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
	wc := &webConsole{srv: ws, addr: ln.Addr().String(), done: make(chan error, 1)}
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

// listener describes the console for status.
func (wc *webConsole) listener() admin.Listener {
	return admin.Listener{Kind: kindWeb, Addr: wc.addr, URI: wc.url}
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
