// Package bridge joins VM serial ports (package vspc) to what is on the
// other side: a device from a [[route]], or for direction-client VMs
// without a route, the remote system their service URI names (subject to
// [policy] connect_allow). It implements vspc.Bridger.
//
// Each joined port gets a link: it opens the device or remote, reconnects
// it with exponential backoff when it drops (the VM session stays up), and
// copies its output to the VM through the port's bounded queue. Between
// connect attempts a link holds a timer, not a goroutine (link.go). Data
// from the VM goes to the device directly; while the device is away it is
// buffered (bounded by [vmotion] buffer), then the VM is back-pressured.
// Nothing is dropped.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/devices"
	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/internal/keepalive"
	"github.com/vspc-bridge/vspc-bridge/internal/park"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// Bridge opens links for VM serial ports. It is safe for concurrent use.
type Bridge struct {
	log *slog.Logger
	wg  sync.WaitGroup

	mu       sync.Mutex // guards cfg, consoles, observer, owners and guard
	cfg      *configs.Config
	consoles Consoles
	observer Observer
	owners   map[string]*link // device key → the link that holds it
	guard    DeviceGuard      // cluster device claims (guard.go); nil on a single node
	closed   bool

	gate  dialGate  // first device connects of a reconnect storm wait for it to pass
	dials *dialPool // device opens run here
	bufs  sync.Pool // *[]byte of 1 KiB: pump read buffers

	park *park.Parker // parks idle device connections ([vspc] park_after); nil: never

	tapHistory int // bytes of traffic a new link keeps for taps (SetTapHistory); guarded by mu

	// open opens a link's device: devices.Open (tests replace it).
	open func(ctx context.Context, t target.Target, opts devices.Options) (devices.Device, error)

	resolver *net.Resolver // host names for connect_allow checks

	// deviceKeep spreads the keepalive idle time of device connections
	// over [8 s, 15 s], Go's keepalive otherwise, so that device
	// connections that went idle together (a wake storm) do not probe in
	// step.
	deviceKeep keepalive.Spreader
}

// New returns a Bridge using cfg; ApplyConfig replaces it later (reload).
func New(cfg *configs.Config, log *slog.Logger) *Bridge {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{cfg: cfg, log: log, owners: make(map[string]*link), resolver: net.DefaultResolver,
		gate: dialGate{quiet: gateQuiet, max: gateMax}, open: devices.Open}
	b.dials = &dialPool{max: maxDialers, wg: &b.wg}
	b.bufs.New = func() any { buf := make([]byte, 1024); return &buf }
	return b
}

// SetParker makes device connections opened from now on park with p
// once they have been idle for [vspc] park_after (package park): an idle
// device connection then holds no goroutine. nil stops parking for new
// connections. p must outlive the Bridge (close it after Close).
func (b *Bridge) SetParker(p *park.Parker) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.park = p
}

// parker is the Parker for a new device connection; nil when parking is
// off (no Parker, or park_after = 0).
func (b *Bridge) parker() *park.Parker {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cfg.VSPC.ParkAfter.Duration <= 0 {
		return nil
	}
	return b.park
}

// parkAfter is how long a device connection is idle before it parks.
func (b *Bridge) parkAfter() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg.VSPC.ParkAfter.Duration
}

// Consoles opens the backend of a direction-server port that no route
// joins to a device: remote users attach to the VM's console (package
// remote implements it).
type Consoles interface {
	Open(ctx context.Context, req vspc.Request, vm vspc.Sink) (vspc.Backend, error)
}

// Observer watches console traffic (package alerts). ObserveConsole must
// not block: it is called on the forwarding path.
type Observer interface {
	ObserveConsole(vm, route string, fromDevice bool, p []byte)
}

// observedSink reports what remote-access users send to a VM (the
// console's input) to an Observer.
type observedSink struct {
	vspc.Sink
	obs Observer
	vm  string
}

func (s observedSink) Send(p []byte) error {
	s.obs.ObserveConsole(s.vm, "", true, p)
	return s.Sink.Send(p)
}

// Info passes the port's status through (remote access shows the port's
// state); a Sink without it is reported as attached.
func (s observedSink) Info() vspc.PortInfo {
	if pi, ok := s.Sink.(interface{ Info() vspc.PortInfo }); ok {
		return pi.Info()
	}
	return vspc.PortInfo{State: "attached"}
}

// observedBackend reports what a VM writes to its remote-access console
// to an Observer.
type observedBackend struct {
	vspc.Backend
	obs Observer
	vm  string
}

func (b observedBackend) Write(p []byte) (int, error) {
	b.obs.ObserveConsole(b.vm, "", false, p)
	return b.Backend.Write(p)
}

// SetObserver makes links opened from now on report their traffic to o;
// nil stops it for new links.
func (b *Bridge) SetObserver(o Observer) {
	b.mu.Lock()
	b.observer = o
	b.mu.Unlock()
}

// SetConsoles enables remote access for direction-server ports without a
// route; nil disables it.
func (b *Bridge) SetConsoles(c Consoles) {
	b.mu.Lock()
	b.consoles = c
	b.mu.Unlock()
}

func (b *Bridge) config() *configs.Config {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg
}

// Wait waits for every link goroutine to end (after their ports closed).
func (b *Bridge) Wait() { b.wg.Wait() }

// Open implements vspc.Bridger: it picks the target, checks policy and
// starts the link. It does not dial: the link connects in the background.
func (b *Bridge) Open(ctx context.Context, req vspc.Request, vm vspc.Sink) (vspc.Backend, error) {
	cfg := b.config()
	var (
		t       target.Target
		initial rfc2217.Settings
		trusted bool // from the config: connect_allow does not apply
		via     string
		route   string
	)
	if r, ok := cfg.MatchRoute(configs.RouteQuery{ServiceURI: req.ServiceURI, VMName: req.VMName, VCUUID: req.VCUUID}); ok {
		t = r.Target() // parsed and checked when the config was loaded
		initial = r.Settings()
		if t.Kind == target.KindNPort && t.CmdPort != 0 && !r.SettingsGiven() {
			// The route says nothing about the line: the NPort keeps what
			// its console says until the guest sets something (the
			// default 9600 8N1 is not pushed onto it).
			initial = rfc2217.Settings{}
		}
		trusted = true
		via = "route " + r.Name
		route = r.Name
	} else {
		if req.Direction != vspc.DirClient {
			b.mu.Lock()
			consoles, obs := b.consoles, b.observer
			b.mu.Unlock()
			if consoles == nil {
				return nil, fmt.Errorf("no [[route]] matches service URI %q (VM %q), and remote access to direction-server ports is not configured", req.ServiceURI, req.VMName)
			}
			if obs != nil { // console alerts see remote-access consoles too
				vm = observedSink{Sink: vm, obs: obs, vm: req.VMName}
			}
			be, err := consoles.Open(ctx, req, vm)
			if err != nil {
				return nil, fmt.Errorf("remote access: %w", err)
			}
			if obs != nil {
				be = observedBackend{Backend: be, obs: obs, vm: req.VMName}
			}
			b.log.Info("port joined", "via", "remote access", "vm", req.VMName, "vc_uuid", req.VCUUID, "service_uri", req.ServiceURI)
			return be, nil
		}
		var err error
		t, err = target.Parse(req.ServiceURI)
		if err != nil {
			return nil, fmt.Errorf("service URI: %w", err)
		}
		if !t.Kind.Network() {
			return nil, fmt.Errorf("service URI %q: a VM may only name network targets (tcp, telnet, rfc2217); local devices need a [[route]]", req.ServiceURI)
		}
		if err := b.checkAllowed(ctx, cfg, t.Host, t.Port); err != nil {
			return nil, err
		}
		via = "service URI"
	}
	l := &link{
		b:           b,
		name:        req.VMName,
		uuid:        req.VCUUID,
		service:     req.ServiceURI,
		direction:   req.Direction,
		target:      t,
		key:         t.Key(),
		route:       route,
		trusted:     trusted,
		initial:     initial,
		vm:          vm,
		buffer:      int(cfg.VMotion.Buffer),
		minWait:     cfg.Policy.ReconnectMin.Duration,
		maxWait:     cfg.Policy.ReconnectMax.Duration,
		dialTimeout: cfg.Policy.DialTimeout.Duration,
	}
	if t.Kind.FixedLine() {
		// tcp, telnet, nport: the line the device server is configured to.
		// An nport target with a command port falls back to it only when
		// the command port does not connect (and then says so once).
		l.fixed = devices.NewFixedLineLazy(t, initial.Merge(t.Settings), l.logger)
	}
	l.cond.L = &l.mu
	b.mu.Lock()
	l.observer = &linkObserver{next: b.observer, histMax: b.tapHistory} // alerts, taps and their history (tap.go)
	if b.closed {
		b.mu.Unlock()
		return nil, errors.New("bridge closing")
	}
	if owner := b.owners[l.key]; owner != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("device %s is in use by VM %q (%s); a device is owned by one VM at a time", l.key, owner.vmName(), owner.vmUUID())
	}
	b.owners[l.key] = l
	b.mu.Unlock()
	l.start(b.gate.opened(time.Now()))
	if l.logs(slog.LevelInfo) {
		l.logger().Info("port joined", "via", via, "direction", req.Direction.String())
	}
	return l, nil
}

// checkAllowed applies [policy] connect_allow to a VM-named target: a
// host-pattern rule admits the name; otherwise every address it resolves
// to must be admitted by an address rule.
func (b *Bridge) checkAllowed(ctx context.Context, cfg *configs.Config, host string, port int) error {
	allow := cfg.Allow()
	if allow.Empty() {
		return fmt.Errorf("target %s not allowed: [policy] connect_allow is empty (nothing is allowed)", net.JoinHostPort(host, fmt.Sprint(port)))
	}
	if allow.AllowName(host, port) {
		return nil
	}
	ips, err := b.lookup(ctx, host)
	if err != nil {
		return fmt.Errorf("target %s: %w", host, err)
	}
	for _, ip := range ips {
		if !allow.AllowAddr(ip, port) {
			return fmt.Errorf("target %s not allowed by [policy] connect_allow (address %s)", net.JoinHostPort(host, fmt.Sprint(port)), ip)
		}
	}
	return nil
}

func (b *Bridge) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip.Unmap()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ips, err := b.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("no addresses for %q", host)
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return ips, nil
}

// policyDial dials a VM-named target, checking connect_allow on the very
// address it connects to (no DNS rebinding around the check in Open).
func (b *Bridge) policyDial(ctx context.Context, network, address string) (net.Conn, error) {
	cfg := b.config()
	host, ps, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("bad port in %q", address)
	}
	allow := cfg.Allow()
	nameOK := allow.AllowName(host, port)
	ips, err := b.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{KeepAliveConfig: b.deviceKeep.Default()}
	var last error
	for _, ip := range ips {
		if !nameOK && !allow.AllowAddr(ip, port) {
			last = fmt.Errorf("address %s not allowed by [policy] connect_allow", ip)
			continue
		}
		c, err := d.DialContext(ctx, network, netip.AddrPortFrom(ip, uint16(port)).String())
		if err == nil {
			return c, nil
		}
		last = err
	}
	return nil, last
}

// Close stops every link. Ports normally close their backends first.
func (b *Bridge) Close() {
	b.mu.Lock()
	b.closed = true
	links := make([]*link, 0, len(b.owners))
	for _, l := range b.owners {
		links = append(links, l)
	}
	b.mu.Unlock()
	for _, l := range links {
		l.Close()
	}
	b.gate.close()
	b.wg.Wait()
}
