package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/keepalive"
	"github.com/vspc-bridge/vspc-bridge/internal/lazylog"
	"github.com/vspc-bridge/vspc-bridge/internal/park"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// killGrace is how long a connection's writer may take to deliver its
// last words (a farewell, the "you fell behind" notice) before the
// connection is closed under it.
const killGrace = 2 * time.Second

// ErrDisabled is returned by Open when [remote] enabled is false.
var ErrDisabled = errors.New("remote: remote console access is off ([remote] enabled = false)")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("remote: hub closed")

// Hub gives remote users access to the consoles of direction-server VM
// serial ports: it is the vspc.Backend of each such port (Open), runs a
// per-VM listener for it, and the front doors (Serve). It is safe for
// concurrent use.
type Hub struct {
	cfg     *configs.Config
	log     *slog.Logger
	now     func() time.Time
	auth    *authenticator
	ports   *portStore
	tlsConf *tls.Config       // nil without [remote] tls_cert
	sshConf *ssh.ServerConfig // nil without ssh_host_keys; copied per connection
	escape  []byte

	ctx      context.Context // cancelled by Close: every session and per-VM listener
	cancel   context.CancelFunc
	wg       sync.WaitGroup // every goroutine the hub starts
	sem      chan struct{}  // one token per remote connection (max_sessions)
	pre      chan struct{}  // one token per connection not logged in yet (max_unauthenticated)
	bufs     bufPool        // client queue buffers
	park     *park.Parker   // idle per-VM clients wait here without a goroutine; nil: never park
	ownPark  bool           // New made park, Close closes it
	parkSet  bool           // WithParker was given
	parkIdle time.Duration  // how long a per-VM client is idle before it parks
	assigner PortAssigner   // ports of port_range, when a cluster assigns them
	cluster  Cluster        // the other members' consoles; nil on a single bridge

	keep     keepalive.Spreader // the keepalive idle times of admitted client connections
	parked   atomic.Int64       // client connections parked now
	parkedLn atomic.Int64       // per-VM listeners parked now
	logins   atomic.Int64       // successful logins
	dropped  atomic.Int64       // clients dropped for falling behind

	mu        sync.Mutex // guards the fields below
	closed    bool
	consoles  map[*console]struct{}
	byPort    map[int]*console        // per-VM listener port → console
	listeners map[net.Listener]string // open listeners → front door kind ("" for per-VM)
	bound     []frontDoor             // front doors opened by Bind, not yet served
}

// An Option changes a default of New.
type Option func(*Hub)

// WithParker makes idle per-VM clients wait in p (shared with the rest
// of the process) instead of a parker of the hub's own. Nil: they never
// park (a goroutine each).
func WithParker(p *park.Parker) Option {
	return func(h *Hub) { h.park, h.ownPark, h.parkSet = p, false, true }
}

// WithParkIdle sets how long an attached per-VM client's connection must
// go without input before it is parked (default 5s; it parks between
// once and twice that after its last input).
func WithParkIdle(d time.Duration) Option { return func(h *Hub) { h.parkIdle = d } }

// PortAssigner assigns the per-VM listener ports of port_range across
// several bridges (package cluster): a VM serial port gets the same port
// whichever bridge serves it, and no two serial ports of the cluster get
// the same one. When the range is full it may reclaim the port of a
// serial port that is not attached now: reclaimed then describes it, for
// the log ("port_range full: " + reclaimed), as the state file's does.
type PortAssigner interface {
	AssignListener(ctx context.Context, key vspc.PortKey, vmName string, lo, hi int) (port int, reclaimed string, err error)
}

// WithPortAssigner makes the ports of port_range come from a (a
// cluster) instead of the state file. A VM that sent neither VC UUID nor
// name still gets one from the state file (no other bridge could find
// its port).
func WithPortAssigner(a PortAssigner) Option { return func(h *Hub) { h.assigner = a } }

// WithClock makes the hub read the time from now instead of time.Now:
// login rate limiting (login_window) and the timestamps it reports.
func WithClock(now func() time.Time) Option { return func(h *Hub) { h.now = now } }

// New returns a Hub for cfg. With remote access enabled it loads (or on
// first start generates) the SSH host keys, the TLS certificate and the
// persisted port assignments. Call Serve to run the front doors, and Close
// when done.
func New(cfg *configs.Config, log *slog.Logger, opts ...Option) (*Hub, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &cfg.Remote
	h := &Hub{
		cfg:       cfg,
		log:       log,
		now:       time.Now,
		parkIdle:  parkIdle,
		escape:    r.EscapeBytes(),
		sem:       make(chan struct{}, max(r.MaxSessions, 1)),
		pre:       make(chan struct{}, max(r.MaxUnauthenticated, 1)),
		consoles:  map[*console]struct{}{},
		byPort:    map[int]*console{},
		listeners: map[net.Listener]string{},
	}
	for _, o := range opts {
		o(h)
	}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if !r.Enabled {
		return h, nil
	}
	h.auth = newAuthenticator(cfg, log, h.now)
	if !h.parkSet {
		p, err := park.New(park.Config{Logger: log})
		if err != nil {
			return nil, fmt.Errorf("remote: %w", err)
		}
		h.park, h.ownPark = p, true
	}
	lo, hi := r.PortRangeBounds()
	var err error
	if h.ports, err = loadPortStore(r.StateFile, lo, hi); err != nil {
		return nil, err
	}
	if r.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(r.TLSCert, r.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("remote: tls_cert/tls_key: %w", err)
		}
		h.tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if len(r.SSHHostKeys) > 0 {
		conf := &ssh.ServerConfig{ServerVersion: "SSH-2.0-vspc-bridge", MaxAuthTries: 6}
		for _, path := range r.SSHHostKeys {
			signer, generated, err := loadHostKey(path)
			if err != nil {
				return nil, err
			}
			if generated {
				log.Info("generated SSH host key", "path", path, "type", signer.PublicKey().Type(), "fingerprint", ssh.FingerprintSHA256(signer.PublicKey()))
			}
			conf.AddHostKey(signer)
		}
		h.sshConf = conf
	}
	return h, nil
}

// logReclaimed logs a console port that a full port_range took from
// another serial port for req's (reclaimed describes it; "": none), the
// same line whether the state file or the cluster gave it.
func (h *Hub) logReclaimed(req vspc.Request, reclaimed string) {
	if reclaimed != "" {
		h.log.Info("port_range full: "+reclaimed, "vm", req.VMName, "vc_uuid", req.VCUUID, "service_uri", req.ServiceURI)
	}
}

// clusterListener binds the port the cluster assigns to req's serial port.
// A port that cannot be had (etcd did not answer, the range is full, or
// another program holds the port on this host) leaves the console without
// a per-VM listener, reachable through the front doors only, and says so:
// the VM's serial link does not depend on its console port.
func (h *Hub) clusterListener(ctx context.Context, req vspc.Request, bind func(port int) (net.Listener, error)) net.Listener {
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	p, reclaimed, err := h.assigner.AssignListener(actx, req.PortKey(), req.VMName, h.ports.lo, h.ports.hi)
	h.logReclaimed(req, reclaimed)
	if err != nil {
		h.log.Warn("remote: no console port from the cluster; the console is reachable through the front doors only",
			"vm", req.VMName, "vc_uuid", req.VCUUID, "service_uri", req.ServiceURI, "err", err)
		return nil
	}
	ln, err := bind(p)
	if err != nil {
		h.log.Warn("remote: the console port the cluster assigned cannot be opened here; the console is reachable through the front doors only",
			"vm", req.VMName, "vc_uuid", req.VCUUID, "service_uri", req.ServiceURI, "port", p, "err", err)
		return nil
	}
	return ln
}

// SetUsers makes the [[user]] tables of cfg (a reloaded config) apply to
// logins from now on; sessions already logged in keep their rights. Other
// [remote] settings need a restart.
func (h *Hub) SetUsers(cfg *configs.Config) {
	if h.auth != nil {
		h.auth.setUsers(cfg.Users)
	}
}

// Open implements vspc.Bridger for direction-server ports: it returns the
// console of the VM serial port and starts its per-VM listener (on the
// port its service URI names, or one from port_range kept for it). It
// refuses a port that cannot get the listener its service URI names, or
// one from port_range on a single bridge; in a cluster, a port_range port
// that cannot be had leaves the console on the front doors (a warning
// says why) and the VM's serial port is served all the same. The console
// lives until the vspc server closes it (grace period over, shutdown):
// across vMotion and reconnects.
func (h *Hub) Open(ctx context.Context, req vspc.Request, vm vspc.Sink) (vspc.Backend, error) {
	r := &h.cfg.Remote
	if !r.Enabled {
		return nil, ErrDisabled
	}
	spec, err := parseServiceURI(req.ServiceURI, r.PortScheme)
	if err != nil {
		return nil, err
	}
	if spec.scheme == schemeTelnets && h.tlsConf == nil {
		return nil, fmt.Errorf("remote: service URI %q asks for telnets, but [remote] tls_cert is not set", req.ServiceURI)
	}
	c := &console{
		h:       h,
		req:     req,
		vm:      vm,
		key:     req.PortKey().String(),
		log:     lazylog.With(h.log, "vm", req.VMName, "vc_uuid", req.VCUUID, "service_uri", req.ServiceURI),
		created: h.now(),
		dropMsg: fmt.Sprintf("\r\n[vspc-bridge: you fell more than %s behind the console of %s; disconnecting]\r\n", r.ClientQueue, req.VMName),
	}
	c.sb.max = int(r.Scrollback)
	bind := func(port int) (net.Listener, error) {
		h.mu.Lock()
		o := h.byPort[port]
		h.mu.Unlock()
		if o != nil {
			return nil, fmt.Errorf("port %d is the console port of VM %q (%s, service URI %q)", port, o.req.VMName, o.req.VCUUID, o.req.ServiceURI)
		}
		return net.Listen("tcp", net.JoinHostPort(r.Bind, strconv.Itoa(port)))
	}
	var ln net.Listener
	if spec.port != 0 {
		if ln, err = bind(spec.port); err != nil {
			return nil, fmt.Errorf("remote: VM %q asks for console port %d (service URI %q): %w", req.VMName, spec.port, req.ServiceURI, err)
		}
	} else if h.assigner != nil && h.ports.lo != 0 && (req.VCUUID != "" || req.VMName != "") {
		ln = h.clusterListener(ctx, req, bind)
		c.assigned = ln != nil
	} else {
		var reclaimed string
		ln, reclaimed, err = h.ports.assign(c.key, req.VMName, req.ServiceURI, bind)
		h.logReclaimed(req, reclaimed)
		switch {
		case errors.Is(err, ErrNoPortRange):
			ln = nil // reachable through the front doors only
		case err != nil:
			return nil, fmt.Errorf("remote: VM %q (service URI %q): %w", req.VMName, req.ServiceURI, err)
		}
	}
	port := 0
	var tcpLn *net.TCPListener
	if ln != nil {
		tcpLn, _ = ln.(*net.TCPListener)
		c.lnURL = spec.scheme + "://" + ln.Addr().String()
		port = ln.Addr().(*net.TCPAddr).Port
		if spec.scheme == schemeTelnets {
			ln = tls.NewListener(ln, h.tlsConf)
		}
		c.ln = ln
	}
	if r.LogDir != "" {
		path := filepath.Join(r.LogDir, logFileName(req.VMName, req.VCUUID, req.ServiceURI))
		if c.logw, err = newLogWriter(path, int64(r.LogMaxSize), r.LogMaxFiles, int(r.LogBuffer)); err != nil {
			if ln != nil {
				ln.Close()
			}
			return nil, err
		}
	}
	c.ctx, c.cancel = context.WithCancel(h.ctx)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		c.cancel()
		if ln != nil {
			ln.Close()
		}
		if c.logw != nil {
			c.logw.f.Close()
		}
		return nil, ErrClosed
	}
	h.consoles[c] = struct{}{}
	if port != 0 {
		h.byPort[port] = c
	}
	if c.logw != nil {
		h.wg.Go(func() {
			if err := c.logw.run(); err != nil {
				c.log.Error("console log stopped", "err", err)
			}
		})
	}
	if ln != nil {
		raw := spec.scheme == schemeTCP
		c.acc = h.newVMListener(c, ln, tcpLn, func(ctx context.Context, nc net.Conn, in, done func()) { h.serveTelnet(ctx, nc, raw, c, in, done) })
		h.wg.Go(func() { c.acc.run() })
	}
	h.mu.Unlock()
	logPath := ""
	if c.logw != nil {
		logPath = c.logw.path
	}
	c.log.Info("remote console open", "listen", c.lnURL, "log", logPath)
	return c, nil
}

// DropListener closes the per-VM listener on port when the serial port
// of its console no longer has the port (still reports that for a
// console's key) and the port came from the PortAssigner (not from the
// state file, or from the port its service URI names): a cluster
// reclaimed it for another serial port while
// this member went on serving the old one (its lease had lapsed, cut off
// from etcd). The console stays open, reachable through the front doors;
// clients attached through the listener stay attached. It reports whether
// a listener was closed.
func (h *Hub) DropListener(port int, still func(vspc.PortKey) bool) bool {
	h.mu.Lock()
	c := h.byPort[port]
	if c == nil || !c.assigned || still(c.req.PortKey()) {
		h.mu.Unlock()
		return false
	}
	delete(h.byPort, port)
	h.mu.Unlock()
	c.lnGone.Store(true)
	if c.acc != nil {
		c.acc.close()
	} else if c.ln != nil {
		c.ln.Close()
	}
	c.log.Warn("remote: console port given to another VM serial port by the cluster; its per-VM listener here is closed (front doors only)", "port", port)
	return true
}

func (h *Hub) removeConsole(c *console) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.consoles, c)
	for p, o := range h.byPort {
		if o == c {
			delete(h.byPort, p)
		}
	}
}

// Consoles returns a snapshot of the consoles, sorted by VM name.
func (h *Hub) Consoles() []ConsoleInfo {
	list := h.consoleList()
	out := make([]ConsoleInfo, 0, len(list))
	for _, c := range list {
		out = append(out, c.info())
	}
	return out
}

// frontDoor is a configured front door, bound by Bind.
type frontDoor struct {
	key   string // config key: telnet_listen, telnets_listen, ssh_listen
	serve func(context.Context, net.Listener) error
	ln    net.Listener
}

// Bind opens the configured front doors (telnet_listen, telnets_listen,
// ssh_listen) without serving them yet, so that a port in use is an
// error when the bridge starts, before it accepts VMs. Serve binds them
// itself when Bind was not called. Bind with remote access off does
// nothing.
func (h *Hub) Bind() error {
	r := &h.cfg.Remote
	h.mu.Lock()
	bound := h.bound != nil
	h.mu.Unlock()
	if !r.Enabled || bound {
		return nil
	}
	type front struct {
		key, addr string
		serve     func(context.Context, net.Listener) error
		tls       bool
	}
	var fronts []front
	if r.TelnetListen != "" {
		fronts = append(fronts, front{"telnet_listen", r.TelnetListen, h.ServeTelnet, false})
	}
	if r.TelnetsListen != "" {
		fronts = append(fronts, front{"telnets_listen", r.TelnetsListen, func(ctx context.Context, ln net.Listener) error {
			return h.acceptLoop(ctx, ln, "telnets", func(ctx context.Context, nc net.Conn, in, done func()) { h.serveTelnet(ctx, nc, false, nil, in, done) })
		}, true})
	}
	if r.SSHListen != "" {
		fronts = append(fronts, front{"ssh_listen", r.SSHListen, h.ServeSSH, false})
	}
	doors := make([]frontDoor, 0, len(fronts))
	fail := func(err error) error {
		for _, d := range doors {
			d.ln.Close()
		}
		return err
	}
	for _, f := range fronts {
		if f.tls && h.tlsConf == nil {
			return fail(fmt.Errorf("remote: [remote] %s needs tls_cert", f.key))
		}
		ln, err := net.Listen("tcp", f.addr)
		if err != nil {
			return fail(fmt.Errorf("remote: [remote] %s %s: %w", f.key, f.addr, err))
		}
		if f.tls {
			ln = tls.NewListener(ln, h.tlsConf)
		}
		h.log.Info("remote front door listening", "kind", f.key, "addr", ln.Addr().String())
		doors = append(doors, frontDoor{key: f.key, serve: f.serve, ln: ln})
	}
	h.mu.Lock()
	h.bound = doors
	h.mu.Unlock()
	return nil
}

// Serve serves the front doors (binding them first unless Bind did)
// until ctx is done or Close is called; then it returns ctx.Err() (or
// ErrClosed). A listener that cannot be opened is an error at once.
func (h *Hub) Serve(ctx context.Context) error {
	if !h.cfg.Remote.Enabled {
		<-ctx.Done()
		return ctx.Err()
	}
	if err := h.Bind(); err != nil {
		return err
	}
	h.mu.Lock()
	doors := h.bound
	h.bound = nil // acceptLoop owns them now (and closes them if the hub is closed)
	h.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(h.ctx, cancel)
	defer stop()
	errc := make(chan error, len(doors))
	for _, d := range doors {
		go func() { errc <- d.serve(sctx, d.ln) }()
	}
	var first error
	for range doors {
		if err := <-errc; first == nil && sctx.Err() == nil {
			first = err // a front door failed by itself: stop the others
			cancel()
		}
	}
	<-sctx.Done() // with no front doors configured, wait here
	switch {
	case first != nil:
		return first
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return ErrClosed
}

// Counters are cumulative event counts, for status and metrics.
type Counters struct {
	Logins         int64 // successful logins (telnet, SSH)
	LoginFailures  int64 // wrong password, unknown user, no accepted key
	LoginsRefused  int64 // attempts refused while rate-limited
	ClientsDropped int64 // clients dropped: over client_queue in "drop" mode, or stalled for client_stall
	Sessions       int   // remote connections open now
	LoggingIn      int   // of those, connections not logged in yet
	Parked         int   // client connections parked now (idle per-VM clients: no goroutine)
	ParkedPorts    int   // per-VM listeners parked now (nobody connecting: no goroutine)
}

// Counters returns the hub's counters.
func (h *Hub) Counters() Counters {
	c := Counters{Logins: h.logins.Load(), ClientsDropped: h.dropped.Load(), Sessions: len(h.sem), LoggingIn: len(h.pre), Parked: int(h.parked.Load()), ParkedPorts: int(h.parkedLn.Load())}
	if h.auth != nil {
		c.LoginFailures, c.LoginsRefused = h.auth.failures.Load(), h.auth.refused.Load()
	}
	return c
}

// FrontDoor is a listening front door.
type FrontDoor struct {
	Kind string // telnet, telnets, ssh
	Addr string // host:port it listens on
}

// FrontDoors lists the front doors listening now.
func (h *Hub) FrontDoors() []FrontDoor {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []FrontDoor
	for ln, kind := range h.listeners {
		if kind != "" {
			out = append(out, FrontDoor{Kind: kind, Addr: ln.Addr().String()})
		}
	}
	slices.SortFunc(out, func(a, b FrontDoor) int { return strings.Compare(a.Kind+a.Addr, b.Kind+b.Addr) })
	return out
}

// ServeTelnet serves the telnet front door on ln (wrap ln with
// tls.NewListener for telnets) until ctx is done or Close. It closes ln.
func (h *Hub) ServeTelnet(ctx context.Context, ln net.Listener) error {
	return h.acceptLoop(ctx, ln, "telnet", func(ctx context.Context, nc net.Conn, in, done func()) { h.serveTelnet(ctx, nc, false, nil, in, done) })
}

// ServeSSH serves the SSH front door on ln until ctx is done or Close. It
// closes ln.
func (h *Hub) ServeSSH(ctx context.Context, ln net.Listener) error {
	if h.sshConf == nil {
		ln.Close()
		return errors.New("remote: SSH needs [remote] ssh_host_keys")
	}
	return h.acceptLoop(ctx, ln, "ssh", func(ctx context.Context, nc net.Conn, in, done func()) {
		defer done()
		h.serveSSH(ctx, nc, in)
	})
}

// acceptLoop accepts on ln and runs handle for each connection in a
// goroutine owned by the hub, with a context that ends with ctx or the
// hub. A connection counts against max_sessions until handle calls done
// (once, when the connection has ended: maybe after handle returned), and
// against max_unauthenticated until it calls loggedIn (or done). It closes
// ln and returns when either ends (ctx.Err() or ErrClosed).
func (h *Hub) acceptLoop(ctx context.Context, ln net.Listener, kind string, handle func(ctx context.Context, nc net.Conn, loggedIn, done func())) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	h.listeners[ln] = kind
	h.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopHub := context.AfterFunc(h.ctx, cancel)
	defer stopHub()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer func() {
		h.mu.Lock()
		delete(h.listeners, ln)
		h.mu.Unlock()
		ln.Close()
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if h.ctx.Err() != nil {
				return ErrClosed
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return ErrClosed
			}
			if sleep(ctx, 50*time.Millisecond) != nil {
				return ctx.Err()
			}
			continue
		}
		if err := h.admit(ctx, nc, handle); err != nil {
			return err
		}
	}
}

// admit runs handle for a connection just accepted, on a goroutine owned
// by the hub, unless max_sessions or max_unauthenticated refuse it (it is
// told and closed) or the hub is closed (ErrClosed).
func (h *Hub) admit(ctx context.Context, nc net.Conn, handle func(ctx context.Context, nc net.Conn, loggedIn, done func())) error {
	refuse := func(limit string, n int) {
		h.log.Warn("remote connection refused: "+limit+" reached", "peer", nc.RemoteAddr().String(), limit, n)
		nc.SetWriteDeadline(time.Now().Add(time.Second))
		nc.Write([]byte("vspc-bridge: too many sessions; try again later\r\n"))
		nc.Close()
	}
	select {
	case h.sem <- struct{}{}:
	default:
		refuse("max_sessions", cap(h.sem))
		return nil
	}
	select {
	case h.pre <- struct{}{}:
	default:
		<-h.sem
		refuse("max_unauthenticated", cap(h.pre))
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		<-h.pre
		<-h.sem
		nc.Close()
		return ErrClosed
	}
	h.spreadKeepalive(nc)
	h.wg.Go(func() {
		var once sync.Once
		loggedIn := func() { once.Do(func() { <-h.pre }) }
		handle(ctx, nc, loggedIn, func() {
			loggedIn()
			<-h.sem
		})
	})
	return nil
}

// spreadKeepalive gives an admitted client connection Go's keepalive with
// the next idle time of the spread over [8 s, 15 s] (package keepalive),
// so that clients that connected together (conserver reconnecting to
// every console after a restart) do not probe in step. Should it fail,
// Go's default (15 s) stays.
func (h *Hub) spreadKeepalive(nc net.Conn) {
	if u, ok := nc.(interface{ NetConn() net.Conn }); ok { // telnets
		nc = u.NetConn()
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetKeepAliveConfig(h.keep.Default())
	}
}

// Close stops the front doors and per-VM listeners, disconnects every
// client (telling them), closes the console logs and waits for every
// goroutine. It is idempotent.
func (h *Hub) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	var cons []*console
	for c := range h.consoles {
		cons = append(cons, c)
	}
	for ln := range h.listeners {
		ln.Close()
	}
	for _, d := range h.bound { // bound, never served
		d.ln.Close()
	}
	h.bound = nil
	h.mu.Unlock()
	h.cancel()
	for _, c := range cons {
		c.Close()
	}
	h.wg.Wait()
	if h.ownPark {
		h.park.Close()
	}
	return nil
}
