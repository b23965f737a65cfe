package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-multierror"

	"github.com/vspc-bridge/vspc-bridge/admin"
	"github.com/vspc-bridge/vspc-bridge/alerts"
	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// Listener kinds, as shown by status and in metrics labels.
const (
	kindVSPC    = "vspc"     // [vspc] listen: telnet
	kindVSPCTLS = "vspc-tls" // [vspc] tls_listen: telnets
	kindAdmin   = "admin"    // [admin] listen: HTTP or HTTPS
)

// serveOptions are what serve needs beyond the parsed config to reload it.
type serveOptions struct {
	path       string           // config file; "" is the embedded example
	level      *slog.LevelVar   // the logger's level; reload sets it from [log] level
	levelFixed bool             // -log-level was given: the config's level is ignored
	version    string           // build version for status
	ready      chan<- *daemon   // tests: receives the daemon once its listeners are up
	sighup     <-chan os.Signal // tests: a fake SIGHUP source; nil uses the process's
}

// daemon owns the listeners, the admin endpoint and the alert matcher of
// a running serve, and applies config reloads (SIGHUP or POST
// /api/v1/reload) to them, to the bridge and to the TLS certificates
// (reload.go).
type daemon struct {
	opts    serveOptions
	log     *slog.Logger
	br      *bridge.Bridge
	srv     *vspc.Server
	alerts  *alerts.Matcher
	admin   *admin.Handler
	started time.Time
	parked  func() int // the Parker's count; nil when parking is off

	vspcCert  atomic.Pointer[tls.Certificate] // served by the telnets listener (GetCertificate)
	adminCert atomic.Pointer[tls.Certificate]
	token     atomic.Pointer[string]
	closing   atomic.Bool

	mu      sync.Mutex // guards the fields below; held for a whole reload
	cfg     *configs.Config
	lns     map[string]*boundListener // by kind
	reloads admin.Reloads

	// consoles lists the remote-access consoles (a *remote.Hub's
	// Consoles); set before start when remote access is wired in.
	consoles func() []remote.ConsoleInfo
	// remote returns the remote-access counters; set before start when
	// remote access is enabled.
	remote func() *admin.RemoteCounters
	// setUsers applies the [[user]] tables of a reloaded config (a
	// *remote.Hub's SetUsers); set before start. Without it a change of
	// users is reported as needing a restart.
	setUsers func(*configs.Config)
	// web is the web console, for status and reloads; nil when it is
	// off. Set before start.
	web *webConsole

	// cluster returns the cluster part of the status; set before start
	// when the bridge is a cluster member.
	cluster func() *admin.ClusterStatus
	// owners returns the ports of a VM other cluster members serve.
	owners func(ctx context.Context, vm string) ([]admin.PortOwner, error)

	fatal chan error     // a listener failed on its own
	wg    sync.WaitGroup // listener and matcher goroutines
}

// boundListener is one listening socket and the goroutine serving it.
type boundListener struct {
	kind    string
	addr    string // as configured
	tls     bool
	ln      net.Listener
	cancel  context.CancelFunc
	done    chan struct{}
	retired atomic.Bool // closed on purpose: its serve error is not fatal
}

// retire closes the socket at once (freeing its port) and ends its
// server: a VM listener's accepted connections live on in the vspc
// server; an admin listener finishes its requests in flight. With wait
// it returns when the serving goroutine has ended; without (an admin
// listener may be retiring from inside its own reload request) the
// daemon's WaitGroup still tracks it.
func (b *boundListener) retire(wait bool) {
	b.retired.Store(true)
	b.ln.Close()
	if b.cancel != nil {
		b.cancel()
		if wait {
			<-b.done
		}
	}
}

func newDaemon(cfg *configs.Config, log *slog.Logger, br *bridge.Bridge, srv *vspc.Server, opts serveOptions) *daemon {
	d := &daemon{opts: opts, log: log, br: br, srv: srv, cfg: cfg, lns: map[string]*boundListener{}, started: time.Now(), fatal: make(chan error, 4)}
	ac := alerts.FromConfig(cfg)
	ac.Logger = log
	d.alerts = alerts.New(ac)
	br.SetObserver(d.alerts) // console alerts see what links forward
	d.admin = admin.New(admin.Config{
		Server:  srv,
		Devices: br.Devices,
		Alerts:  d.alerts.Stats,
		Parked: func() int {
			if d.parked == nil {
				return 0
			}
			return d.parked()
		},
		Status: d.status,
		Ready:  d.ready,
		Reload: d.reload,
		Token:  func() string { return *d.token.Load() },
		Owners: func(ctx context.Context, vm string) ([]admin.PortOwner, error) {
			if d.owners == nil {
				return nil, nil
			}
			return d.owners(ctx, vm)
		},
		Consoles: func() []admin.Console {
			if d.consoles == nil {
				return nil
			}
			return consolesForAdmin(d.consoles())
		},
		Remote: func() *admin.RemoteCounters {
			if d.remote == nil {
				return nil
			}
			return d.remote()
		},
		Logger: log.With("component", "admin"),
	})
	return d
}

// start loads the certificates and token and binds every configured
// listener; on error nothing is left open. An admin endpoint that cannot
// be bound is logged and left out (VMs matter more; a reload retries it).
func (d *daemon) start() error {
	p, err := d.prepare(d.cfg)
	if err != nil {
		return err
	}
	vmOnly := *p.cfg
	vmOnly.Admin.Listen = ""
	vm := &prepared{cfg: &vmOnly}
	if err := d.bind(vm, nil); err != nil {
		return err
	}
	p.bound = vm.bound
	if d.cfg.Admin.Listen != "" {
		admOnly := *p.cfg
		admOnly.VSPC.Listen, admOnly.VSPC.TLSListen = "", ""
		adm := &prepared{cfg: &admOnly}
		if err := d.bind(adm, nil); err != nil {
			d.log.Error("admin endpoint not started; VMs are served without it (fix [admin] listen and reload)", "err", err)
		}
		p.bound = append(p.bound, adm.bound...)
	}
	d.commitSecrets(p)
	for _, b := range p.bound {
		d.lns[b.kind] = b
		d.serveListener(b)
	}
	return nil
}

// run serves until ctx is done or a listener fails, reloading on SIGHUP.
func (d *daemon) run(ctx context.Context) error {
	actx, cancel := context.WithCancel(context.Background())
	d.wg.Go(func() { d.alerts.Run(actx) })
	defer cancel()
	hup := d.opts.sighup
	if hup == nil {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGHUP)
		defer signal.Stop(ch)
		hup = ch
	}
	if d.opts.ready != nil {
		d.opts.ready <- d
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-d.fatal:
			return err
		case <-hup:
			d.log.Info("SIGHUP: reloading the config", "config", d.source())
			d.reload(ctx)
		}
	}
}

// shutdown stops the listeners that are left (the VM listeners are closed
// by the server's Shutdown first) and waits for every goroutine.
func (d *daemon) shutdown() {
	d.closing.Store(true)
	d.mu.Lock()
	for k, b := range d.lns {
		b.retire(true)
		delete(d.lns, k)
	}
	d.mu.Unlock()
	d.wg.Wait()
}

func (d *daemon) serveListener(b *boundListener) {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.done = cancel, make(chan struct{})
	ln := b.ln
	switch {
	case b.kind == kindVSPCTLS:
		ln = tls.NewListener(ln, d.tlsConfig(&d.vspcCert))
	case b.kind == kindAdmin && b.tls:
		ln = tls.NewListener(ln, d.tlsConfig(&d.adminCert))
	}
	d.wg.Go(func() {
		defer close(b.done)
		var err error
		if b.kind == kindAdmin {
			err = d.admin.Serve(ctx, ln)
		} else {
			err = d.srv.Serve(ctx, ln)
		}
		if ctx.Err() == nil && err != nil && !b.retired.Load() && !errors.Is(err, vspc.ErrServerClosed) && !d.closing.Load() {
			select {
			case d.fatal <- fmt.Errorf("%s listener %s: %w", b.kind, b.addr, err):
			default:
			}
		}
	})
}

// tlsConfig serves whatever certificate cert holds at handshake time, so
// a reload swaps it without touching the listener.
func (d *daemon) tlsConfig(cert *atomic.Pointer[tls.Certificate]) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := cert.Load(); c != nil {
				return c, nil
			}
			return nil, errors.New("no certificate configured")
		},
	}
}

// prepared is a config with its files read and listeners bound, ready to
// be committed.
type prepared struct {
	cfg       *configs.Config
	vspcCert  *tls.Certificate
	adminCert *tls.Certificate
	webCert   *tls.Certificate // the web console's new certificate; nil: it keeps its own
	token     string
	bound     []*boundListener // new listeners, not yet served
	replaced  []*boundListener // old listeners they replace (stopped when committed)
	removed   []*boundListener // old listeners no longer configured
	rollback  []func()         // undo the binds (and re-open what they displaced)
}

// prepare reads the files a config names: the certificates and the token.
func (d *daemon) prepare(cfg *configs.Config) (*prepared, error) {
	p := &prepared{cfg: cfg}
	var errs []error
	if cfg.VSPC.TLSListen != "" {
		c, err := loadKeyPair(cfg.VSPC.TLSCert, cfg.VSPC.TLSKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("[vspc] tls_cert/tls_key: %w", err))
		}
		p.vspcCert = c
	}
	if cfg.Admin.Listen != "" && cfg.Admin.TLSCert != "" {
		c, err := loadKeyPair(cfg.Admin.TLSCert, cfg.Admin.TLSKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("[admin] tls_cert/tls_key: %w", err))
		}
		p.adminCert = c
	}
	if d.web != nil && d.web.tls && cfg.Web.TLS() {
		// Read again on every reload: renewed files apply without a
		// restart (turning TLS on or off takes one).
		c, err := loadKeyPair(cfg.Web.TLSCert, cfg.Web.TLSKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("[web] tls_cert/tls_key: %w", err))
		}
		p.webCert = c
	}
	tok, err := cfg.Admin.ReadToken()
	if err != nil {
		errs = append(errs, err)
	}
	p.token = tok
	if len(errs) > 0 {
		return nil, &multierror.Error{Errors: errs, ErrorFormat: oneErrorPerLine}
	}
	return p, nil
}

func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

func oneErrorPerLine(errs []error) string {
	s := make([]string, len(errs))
	for i, e := range errs {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// wanted lists the listeners cfg asks for.
func wanted(cfg *configs.Config) []*boundListener {
	var w []*boundListener
	if cfg.VSPC.Listen != "" {
		w = append(w, &boundListener{kind: kindVSPC, addr: cfg.VSPC.Listen})
	}
	if cfg.VSPC.TLSListen != "" {
		w = append(w, &boundListener{kind: kindVSPCTLS, addr: cfg.VSPC.TLSListen, tls: true})
	}
	if cfg.Admin.Listen != "" {
		w = append(w, &boundListener{kind: kindAdmin, addr: cfg.Admin.Listen, tls: cfg.Admin.TLSCert != ""})
	}
	return w
}

// listen binds addr with [vspc] keepalive applied to every accepted
// connection (ESXi detects a dead proxy by keepalive too; notes
// esxi-wire.md §4.4). On Linux the listener carries it, so accepting
// costs one setsockopt call per connection: the idle time, spread (see
// spreadListener).
func (d *daemon) listen(cfg *configs.Config, addr string) (net.Listener, error) {
	k := cfg.VSPC.Keepalive.Duration
	lc := keepaliveListenConfig(k)
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil || k <= 0 {
		return ln, err
	}
	return &spreadListener{Listener: ln, k: k}, nil
}

// bind opens the listeners of p.cfg whose address (or TLS mode) differs
// from the running ones in old. A new address on the port an old listener
// holds is bound after closing the old one. On error every step is undone.
func (d *daemon) bind(p *prepared, old map[string]*boundListener) error {
	var errs []error
	keep := map[string]bool{}
	for _, w := range wanted(p.cfg) {
		o := old[w.kind]
		if o != nil && o.addr == w.addr && o.tls == w.tls {
			keep[w.kind] = true
			continue
		}
		ln, err := d.listen(p.cfg, w.addr)
		if err != nil && o != nil && samePort(o.addr, w.addr) {
			// The old listener holds the port: let go of it first, and
			// take it back if the new address cannot be bound or the
			// reload is rejected later.
			o.retire(o.kind != kindAdmin)
			reopen := func() {
				back, err := d.listen(d.cfg, o.addr)
				if err != nil {
					d.log.Error("listener lost: cannot re-open it after a rejected reload", "kind", o.kind, "addr", o.addr, "err", err)
					delete(d.lns, o.kind)
					return
				}
				nb := &boundListener{kind: o.kind, addr: o.addr, tls: o.tls, ln: back}
				d.lns[o.kind] = nb
				d.serveListener(nb)
			}
			if ln, err = d.listen(p.cfg, w.addr); err != nil {
				reopen()
			} else {
				p.rollback = append(p.rollback, reopen)
				keep[w.kind] = true // already retired; nothing to replace later
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", listenKey(w.kind), err))
			continue
		}
		w.ln = ln
		p.bound = append(p.bound, w)
		if o != nil && !keep[w.kind] {
			p.replaced = append(p.replaced, o)
		}
	}
	for kind, o := range old {
		if !slices.ContainsFunc(wanted(p.cfg), func(w *boundListener) bool { return w.kind == kind }) {
			p.removed = append(p.removed, o)
		}
	}
	if len(errs) > 0 {
		for _, b := range p.bound {
			b.ln.Close()
		}
		for _, f := range p.rollback {
			f()
		}
		return &multierror.Error{Errors: errs, ErrorFormat: oneErrorPerLine}
	}
	return nil
}

func listenKey(kind string) string {
	switch kind {
	case kindVSPC:
		return "[vspc] listen"
	case kindVSPCTLS:
		return "[vspc] tls_listen"
	}
	return "[admin] listen"
}

func samePort(a, b string) bool {
	_, pa, _ := net.SplitHostPort(a)
	_, pb, _ := net.SplitHostPort(b)
	return pa != "" && pa != "0" && pa == pb
}

func (d *daemon) commitSecrets(p *prepared) {
	d.vspcCert.Store(p.vspcCert)
	d.adminCert.Store(p.adminCert)
	tok := p.token
	d.token.Store(&tok)
}

func (d *daemon) source() string {
	if d.opts.path == "" {
		return "built-in example.toml"
	}
	return d.opts.path
}

// ready is nil when every configured VM listener is serving.
func (d *daemon) ready() error {
	if d.closing.Load() {
		return errors.New("shutting down")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range wanted(d.cfg) {
		if w.kind != kindAdmin && d.lns[w.kind] == nil {
			return fmt.Errorf("%s is not listening", listenKey(w.kind))
		}
	}
	return nil
}

// status is the bridge-wide part of /api/v1/status.
func (d *daemon) status() admin.Status {
	var cl *admin.ClusterStatus
	if d.cluster != nil {
		cl = d.cluster() // may ask etcd: not under d.mu
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := admin.Status{Version: d.opts.version, Started: d.started, Config: d.source(), Reloads: d.reloads, Alerts: d.alerts.Rules(), Cluster: cl}
	for _, kind := range []string{kindVSPC, kindVSPCTLS, kindAdmin} {
		b := d.lns[kind]
		if b == nil {
			continue
		}
		l := admin.Listener{Kind: kind, Addr: b.ln.Addr().String()}
		switch kind {
		case kindVSPC:
			l.URI = "telnet://" + advertised(d.cfg.VSPC.ProxyURI, "telnet", b.ln.Addr().String())
		case kindVSPCTLS:
			c := d.vspcCert.Load()
			l.Thumbprint = configs.LeafThumbprint(c)
			l.URI = d.telnetsURI(d.cfg, b)
			if c != nil && c.Leaf != nil {
				l.CertNotAfter = c.Leaf.NotAfter
			}
		case kindAdmin:
			l.URI = admin.BaseURL(b.ln.Addr().String(), b.tls)
			if c := d.adminCert.Load(); b.tls && c != nil && c.Leaf != nil {
				l.CertNotAfter = c.Leaf.NotAfter
				l.Thumbprint = configs.LeafThumbprint(c)
			}
		}
		st.Listeners = append(st.Listeners, l)
	}
	if d.web != nil {
		st.Listeners = append(st.Listeners, d.web.listener())
	}
	return st
}

// telnetsURI is the proxy URI that pins the telnets certificate.
func (d *daemon) telnetsURI(cfg *configs.Config, b *boundListener) string {
	addr := cfg.VSPC.TLSListen
	if b != nil {
		addr = b.ln.Addr().String()
	}
	return configs.TelnetsURI(advertised(cfg.VSPC.ProxyURI, "telnets", addr), configs.LeafThumbprint(d.vspcCert.Load()))
}

// advertised is the host:port VMs are told for a listener: the proxy_uri's
// when it has the listener's scheme, else the bound address.
func advertised(proxyURI, scheme, bound string) string {
	if u, err := url.Parse(proxyURI); err == nil && strings.EqualFold(u.Scheme, scheme) && u.Host != "" {
		return u.Host
	}
	return bound
}

// consolesForAdmin converts remote-access consoles for the admin API.
func consolesForAdmin(list []remote.ConsoleInfo) []admin.Console {
	out := make([]admin.Console, 0, len(list))
	for _, c := range list {
		ac := admin.Console{VMName: c.VMName, VCUUID: c.VCUUID, ServiceURI: c.ServiceURI, Listen: c.Listen, Users: []admin.RemoteUser{}}
		for _, u := range c.Clients {
			ac.Users = append(ac.Users, admin.RemoteUser{User: u.User, Mode: u.Mode, Peer: u.Peer, Via: u.Via, Since: u.Since})
		}
		out = append(out, ac)
	}
	return out
}
