package vspc

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/park"
)

// Backend is the far side of a VM serial port: a remote system, a device,
// or the remote users of a direction-server port. The bridge package
// implements it. The server never calls a Backend while holding a lock.
type Backend interface {
	// Write forwards data the VM sent. It may block (back-pressure to the
	// VM); it should fail only when the backend is closed.
	Write(p []byte) (int, error)
	// Close releases the backend. Called once, when the port goes away
	// (grace period over, route removed, server shut down).
	Close() error
}

// Sink is what a Backend uses to send data to the VM. It is a *Port.
type Sink interface {
	// Send queues p for the VM (escaped for telnet). It blocks while the
	// port's buffer is full (back-pressure) and returns ErrPortClosed once
	// the port is gone. It never drops data.
	Send(p []byte) error
	// SendBreak sends a telnet BREAK to the VM, in order with the data.
	SendBreak() error
}

// Request describes a VM serial port asking for proxy service.
type Request struct {
	Direction    Direction
	ServiceURI   string
	VMName       string
	VCUUID       string // normalised 8-4-4-4-12, or "" when the VM did not say
	BIOSUUID     string
	LocationUUID string
	Peer         net.Addr
}

// PortKey identifies a VM serial port across its connections: vMotion
// moves a port to another connection and a reconnect finds it again by
// this key. A VM has up to 32 serial ports sharing one VC UUID, told apart
// by service URI (notes esxi-wire.md, "key ports by UUID and service URI").
// It is comparable: packages that join their own records to ports (the
// remote hub, the admin API) key them the same way.
type PortKey struct {
	VM      string // the VC UUID, or "name:" and the VM name when the VM sent no UUID
	Service string // the service URI
}

// PortKeyOf is the key of the port a VM with these identifiers gets.
// Several VMs that sent neither a VC UUID nor a name share a key, but the
// server never shares a port between them: each gets a port of its own,
// which a reconnect cannot find.
func PortKeyOf(vcUUID, vmName, serviceURI string) PortKey {
	if vcUUID == "" {
		return PortKey{VM: "name:" + vmName, Service: serviceURI}
	}
	return PortKey{VM: vcUUID, Service: serviceURI}
}

// PortKey is the key of the port this request attaches to.
func (r Request) PortKey() PortKey { return PortKeyOf(r.VCUUID, r.VMName, r.ServiceURI) }

// String is the key as one string, "<VM> <service URI>": the form the
// remote hub persists its port assignments under, so it never changes.
func (k PortKey) String() string { return k.VM + " " + k.Service }

// Bridger opens backends. Open is called when a VM sends DO-PROXY and no
// port with its identity exists. It must not block long (no dialing in
// the foreground: connect in the background and retry). An error refuses
// the VM with WONT-PROXY; the error text is logged as the reason.
type Bridger interface {
	Open(ctx context.Context, req Request, vm Sink) (Backend, error)
}

// Config holds the server's limits and policy. Zero fields take defaults.
type Config struct {
	HandshakeTimeout  time.Duration // accept → WILL/WONT-PROXY; default 10s
	IdentifyTimeout   time.Duration // DO-PROXY → VM-VC-UUID and VM-NAME; default 2s
	MaxSessions       int           // concurrent VM connections; default 20000
	MaxSubnegotiation int           // default 4096
	GracePeriod       time.Duration // a detached port waits this long for its VM; default 2m, <0 none
	Directions        []Direction   // accepted DO-PROXY directions; nil = both

	VMotionDisabled bool          // answer every VMOTION-BEGIN with NOTNOW
	Buffer          int           // per-port bound on data queued for the VM; default 1 MiB
	FlushTimeout    time.Duration // BEGIN → GOAHEAD at most; default 3s
	PeerTimeout     time.Duration // GOAHEAD → PEER at most; default 3m
	CompleteTimeout time.Duration // PEER-OK → COMPLETE at most; default 30s
	DrainTimeout    time.Duration // after COMPLETE, read the old connection this long; default 2s

	// Parker, when set, parks VM connections that have been idle for
	// ParkAfter (package park): an idle connection then holds no
	// goroutine, and a fresh one resumes its read loop when data
	// arrives. ParkAfter ≤ 0 never parks. The Parker must outlive the
	// server (close it after Close).
	Parker    *park.Parker
	ParkAfter time.Duration

	Bridger Bridger
	Logger  *slog.Logger
	Rand    io.Reader // vMotion secrets; default crypto/rand.Reader

	// HandOvers shares vMotion hand-overs with other bridges (package
	// cluster); nil: a single node.
	HandOvers HandOvers
	// Forwarder carries a VM connection whose port another bridge serves
	// to that bridge (forward.go, package cluster); nil: such a
	// connection is refused.
	Forwarder Forwarder
	// Drops is told when a port's VM connection ends and the port starts
	// its grace period (package cluster reconnects through vCenter a port
	// whose connection dropped on a network fault); nil: a single node.
	Drops Drops
}

// Drops watches ports whose VM connection ended (package cluster).
type Drops interface {
	// Dropped is told, on a goroutine of its own, that the VM connection
	// of the port for req ended with no hand-over in flight, and the port
	// waits its grace period for its VM. abnormal: it ended on a network
	// fault (a reset, a keepalive or retransmission timeout, an
	// unreachable host; abnormalDrop), not on a clean close by the host
	// (a VM powered off, its serial port disconnected on purpose) or by
	// this bridge. A connection another bridge relayed here is never
	// abnormal: its relay saw how the host's connection ended.
	Dropped(req Request, abnormal bool)
}

// HandOvers lets several bridges share vMotion hand-overs, so that a
// destination host's VMOTION-PEER can be finished by another bridge than
// the one that answered GOAHEAD (package cluster implements it).
type HandOvers interface {
	// Begin is asked on VMOTION-BEGIN, before the hand-over starts, with
	// the port and the VMOTION-PEER payload the destination will send
	// (seq‖secret, unescaped) and the sequence's length. An error answers
	// NOTNOW: the VM stays where it is. It may block briefly (it is VM
	// stun time).
	Begin(key PortKey, req Request, payload []byte, seqLen int) error
	// End is told when a hand-over Begin allowed ends, whatever the
	// outcome, on a goroutine of its own.
	End(key PortKey, payload []byte)
	// TakeOver is asked about a VMOTION-PEER this server has no
	// hand-over for (h.Payload is seq‖secret, h the connection's state
	// for a Forwarder's stream). Another bridge has the hand-over: the
	// result's Conn carries the connection there. The bridge that began
	// it is gone: TakeOver claims the port for this one and returns the
	// port's request and the sequence's length; the connection then
	// becomes the port's. An error wrapping ErrNoHandOver: nobody has it
	// (refused as an unknown PEER); any other error refuses it too. It
	// may block a few seconds (VM stun time); ctx ends with the server.
	TakeOver(ctx context.Context, h *Handoff) (PeerResult, error)
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.IdentifyTimeout, 2*time.Second)
	def(&c.GracePeriod, 2*time.Minute)
	def(&c.FlushTimeout, 3*time.Second)
	def(&c.PeerTimeout, 3*time.Minute)
	def(&c.CompleteTimeout, 30*time.Second)
	def(&c.DrainTimeout, 2*time.Second)
	if c.MaxSessions <= 0 {
		c.MaxSessions = 20000
	}
	if c.MaxSubnegotiation <= 0 {
		c.MaxSubnegotiation = 4096
	}
	if c.Buffer <= 0 {
		c.Buffer = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("vspc: server closed")

// ErrPortClosed is returned by Port.Send once the port is gone.
var ErrPortClosed = errors.New("vspc: port closed")

// Server accepts telnet connections from ESXi hosts, speaks the VMware
// telnet extension and joins each VM serial port to a Backend. Ports
// survive vMotion and reconnects: they are keyed by VC UUID and service URI.
type Server struct {
	cfg atomic.Pointer[Config] // replaced whole by SetConfig
	log *slog.Logger

	ctx context.Context // cancelled by Close; parent of every session
	// closedCh points to a channel closed from the start: the done
	// signal of a connection or port that ended before anyone waited.
	closedCh *chan struct{}
	// epoch is when the server was made; the connections' handshake
	// timers count from it (monoTime).
	epoch  time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the server starts, timer callbacks included; a VM connection from accept to its end, parked or not
	nconns atomic.Int64

	mu        sync.Mutex // guards the fields below; taken before any Port.mu (see doc.go), never held to log or write
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[*vmConn]struct{}
	ports     map[PortKey]*Port
	handovers map[string][]pendingPeer // hand-overs waiting for their PEER, by sequence
	seqLens   map[int]int              // sequence length → pending hand-overs with it
	counters  Counters

	bufs sync.Pool // *[]byte read buffers for busy connections
}

// Counters are cumulative event counts, for status and metrics.
type Counters struct {
	Accepted          int64
	Refused           int64 // WONT-PROXY
	HandshakeFailures int64 // the sum of the four below
	HandshakeTimeouts int64 // no DO-PROXY / VMOTION-PEER within the handshake timeout
	HandshakeErrors   int64 // malformed telnet, oversized or broken subnegotiation
	HandshakeLost     int64 // the host closed the connection before the handshake ended
	HandshakeBadPeer  int64 // VMOTION-PEER with a wrong secret or unknown sequence
	VMotionsCompleted int64
	VMotionsAborted   int64
	VMotionsNotNow    int64
	VMotionsBadSecret int64
	VMotionsTimedOut  int64
	Reconnects        int64
	Forwarded         int64 // connections carried to the bridge that serves their port (this bridge relays them)
	HandedIn          int64 // connections another bridge carried here (ServeHandoff)
}

// NewServer returns a server; call Serve to accept connections.
func NewServer(cfg Config) *Server {
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		log:       cfg.Logger,
		ctx:       ctx,
		epoch:     time.Now(),
		cancel:    cancel,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*vmConn]struct{}),
		ports:     make(map[PortKey]*Port),
		handovers: make(map[string][]pendingPeer),
		seqLens:   make(map[int]int),
		bufs:      sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }},
	}
	closed := make(chan struct{})
	close(closed)
	s.closedCh = &closed
	s.cfg.Store(&cfg)
	return s
}

// conf is the configuration in force.
func (s *Server) conf() *Config { return s.cfg.Load() }

// SetConfig replaces the limits, timeouts, directions and vMotion
// settings (a config reload). They apply to what starts from now on: new
// connections and their handshakes, hand-overs begun after it, ports that
// detach after it, and the next check of a port's buffer. Timers already
// running keep their durations. Bridger, Logger and Rand are kept when c
// leaves them nil.
func (s *Server) SetConfig(c Config) {
	old := s.conf()
	if c.Bridger == nil {
		c.Bridger = old.Bridger
	}
	if c.HandOvers == nil {
		c.HandOvers = old.HandOvers
	}
	if c.Forwarder == nil {
		c.Forwarder = old.Forwarder
	}
	if c.Logger == nil {
		c.Logger = old.Logger
	}
	if c.Rand == nil {
		c.Rand = old.Rand
	}
	if c.Parker == nil {
		c.Parker = old.Parker
	}
	c.setDefaults()
	s.cfg.Store(&c)
}

// Serve accepts connections on ln until ctx is done, Shutdown or Close is
// called, or ln fails. It closes ln. It returns ErrServerClosed after a
// shutdown and ctx.Err() after cancellation.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// EMFILE and friends: back off instead of spinning.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; backing off", "err", err, "backoff", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-ctx.Done():
				case <-s.ctx.Done(): // Close
				}
				t.Stop()
				continue
			}
			return fmt.Errorf("vspc: accept: %w", err)
		}
		backoff = 0
		s.accept(nc)
	}
}

func (s *Server) accept(nc net.Conn) {
	if n := s.nconns.Add(1); n > int64(s.conf().MaxSessions) {
		s.nconns.Add(-1)
		s.log.Warn("connection refused: too many sessions", "peer", nc.RemoteAddr(), "max_sessions", s.conf().MaxSessions)
		nc.Close()
		return
	}
	c := newConn(s, nc, s.conf().Parker)
	c.owned = true
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.nconns.Add(-1)
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.counters.Accepted++
	s.wg.Add(1) // until connEnded: a parked connection stays counted
	s.mu.Unlock()
	go c.run(s.ctx)
}

// connEnded forgets a connection that has ended (vmConn.finish).
func (s *Server) connEnded(c *vmConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.nconns.Add(-1)
	s.wg.Done()
}

// ServeConn runs one VM connection on the calling goroutine until it
// ends; Close ends it and waits for it like the connections Serve
// accepts. It is for tests and in-process use (net.Pipe, a
// testing/synctest bubble).
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(s, nc, nil) // never parks: it runs on the caller's goroutine
	if s.adopt(c, nc) {
		c.run(s.ctx)
	}
}

// adopt counts c, a connection that runs on its caller's goroutine
// (ServeConn, ServeHandoff), among the server's until connEnded; when the
// server is closing it closes nc and reports false instead. The closing
// check and the insert are one step, so Close either refuses the
// connection here or finds it in s.conns and closes it.
func (s *Server) adopt(c *vmConn, nc net.Conn) bool {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return false
	}
	s.nconns.Add(1)
	s.conns[c] = struct{}{}
	s.counters.Accepted++
	if c.relayed {
		s.counters.HandedIn++
	}
	s.wg.Add(1) // connEnded ends it
	s.mu.Unlock()
	return true
}

// Shutdown stops accepting, answers any new VMOTION-BEGIN with NOTNOW,
// flushes data queued for VMs (bounded by ctx), then closes every
// connection, port and backend and waits for all goroutines.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	ports := make([]*Port, 0, len(s.ports))
	for _, p := range s.ports {
		ports = append(ports, p)
	}
	s.mu.Unlock()
	for _, p := range ports {
		p.waitFlushed(ctx)
	}
	return s.Close()
}

// Close closes everything at once without flushing and waits for the
// server's goroutines. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*vmConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	ports := make([]*Port, 0, len(s.ports))
	for _, p := range s.ports {
		ports = append(ports, p)
	}
	s.mu.Unlock()
	s.cancel()
	for _, c := range conns {
		c.nc.Close()
	}
	for _, p := range ports {
		p.close("server shutting down")
	}
	s.wg.Wait()
	return nil
}

// attach finds or creates the port for a VM that sent DO-PROXY and makes
// c its active connection; hello (WILL-PROXY and the replies before it)
// is the first thing the port's writer writes to c. reconnect is true when
// the port existed. It runs on c's reader.
func (s *Server) attach(c *vmConn, req Request, hello []byte) (p *Port, reconnect bool, err error) {
	key := req.PortKey()
	anonymous := req.VCUUID == "" && req.VMName == ""
	if !anonymous {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			return nil, false, fmt.Errorf("bridge shutting down")
		}
		if p = s.ports[key]; p != nil {
			p.mu.Lock()
			fx := p.stepLocked(event{kind: evDoProxy, conn: c})
			old := p.active
			if old == c {
				old = nil
			}
			if old != nil {
				old.role.Store(uint32(roleRetired))
			}
			p.attachLocked(c, hello)
			s.counters.Reconnects++
			p.mu.Unlock()
			s.mu.Unlock()
			p.finish(fx, nil)
			if old != nil {
				old.nc.Close()
				p.logger().Info("new connection for this VM serial port replaces the old one", "old_peer", addr(old))
			}
			return p, true, nil
		}
		s.mu.Unlock()
	}
	if s.conf().Bridger == nil {
		return nil, false, fmt.Errorf("no bridger configured")
	}
	p = newPort(s, key, req)
	b, err := s.conf().Bridger.Open(s.ctx, req, p)
	if err != nil {
		return nil, false, err
	}
	p.backend = b
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		b.Close()
		return nil, false, fmt.Errorf("bridge shutting down")
	}
	if anonymous {
		// No identity: a port nobody can reconnect to.
		key.VM = fmt.Sprintf("anon:%p", c)
		p.key = key
	}
	if other := s.ports[key]; other != nil {
		s.mu.Unlock()
		b.Close()
		return s.attach(c, req, hello) // lost a race with the same VM; join it
	}
	s.ports[key] = p
	p.mu.Lock()
	p.attachLocked(c, hello)
	p.mu.Unlock()
	s.mu.Unlock()
	return p, false, nil
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Server) directionAllowed(d Direction) bool {
	if s.conf().Directions == nil {
		return true
	}
	for _, x := range s.conf().Directions {
		if x == d {
			return true
		}
	}
	return false
}

// Counters returns a copy of the event counters.
func (s *Server) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters
}

func (s *Server) count(f func(*Counters)) {
	s.mu.Lock()
	f(&s.counters)
	s.mu.Unlock()
}

// Ports returns a snapshot of every VM serial port.
func (s *Server) Ports() []PortInfo {
	s.mu.Lock()
	ports := make([]*Port, 0, len(s.ports))
	for _, p := range s.ports {
		ports = append(ports, p)
	}
	s.mu.Unlock()
	out := make([]PortInfo, 0, len(ports))
	for _, p := range ports {
		out = append(out, p.Info())
	}
	return out
}

// Sessions is the number of open VM connections.
func (s *Server) Sessions() int { return int(s.nconns.Load()) }
