package devices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/vspc-bridge/vspc-bridge/aspp"
	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// nportDevice is a Moxa NPort serial port in TCP Server mode (target.KindNPort):
// data travels raw on the data port; line control goes through the
// command port (package aspp) when the NPort accepts a connection there
// ("Allow driver control"), and the line settings are fixed, as for tcp,
// when it does not or the URI says cmd=none.
//
// Data never waits for control: Open returns once both sockets are
// connected, and the initial settings are sent beside the data by a
// goroutine the device owns. Port calls wait for that initialisation, one
// command at a time, each answer for at most the command timeout; a
// command the NPort does not answer or refuses is logged and reported by
// Mismatch, and the data keeps flowing.
type nportDevice struct {
	streamConn // the data socket
	*FixedLine // the configured settings; the Port while ctl is nil
	ctl        *nportControl
	log        *slog.Logger
	configured rfc2217.Settings

	ctx    context.Context // ends with Close: bounds the initialisation
	cancel context.CancelFunc
	wg     sync.WaitGroup // the initialisation goroutine
	once   sync.Once      // Close
}

var _ Device = (*nportDevice)(nil)

// nportOpen is what opening an NPort device needs beyond the Target.
type nportOpen struct {
	cmdAddr    string           // host:port of the command port; "" for none
	configured rfc2217.Settings // the route's settings (fixed-line answer, and applied on open)
	apply      rfc2217.Settings // the guest's settings, applied over configured on open
	timeout    time.Duration    // per command answer; zero: DefaultNPortCommandTimeout
	// line answers line control when the command port does not connect.
	// The caller keeps one per device across reconnects (Options.Line),
	// so its mismatch, and the warning about the command port, are
	// logged once. Nil: one of its own.
	line *FixedLine
}

// nportCmdDialTimeout bounds connecting the command port: data waits for
// it, since Moxa's order is command port first.
const nportCmdDialTimeout = 3 * time.Second

// openNPort connects the command socket, then the data socket (the order
// of Moxa's driver), and starts the initialisation. A command port that
// does not connect (refused: "Allow driver control" is off; or no answer
// within nportCmdDialTimeout) is logged and leaves a fixed-line device,
// as tcp://; the data port failing fails Open.
func openNPort(ctx context.Context, t target.Target, o nportOpen, opts *Options, log *slog.Logger) (*nportDevice, error) {
	line := o.line
	if line == nil {
		line = NewFixedLine(t, o.configured, log)
	}
	var cmd net.Conn
	if o.cmdAddr != "" {
		dctx, cancel := context.WithTimeout(ctx, nportCmdDialTimeout)
		c, err := dialAddr(dctx, o.cmdAddr, opts)
		cancel()
		if err == nil {
			cmd = c
		} else {
			why := "did not connect"
			if errors.Is(err, syscall.ECONNREFUSED) {
				why = "refused the connection (is \"Allow driver control\" off in its TCP Server settings?)"
			}
			msg := "devices: nport command port " + why + "; line settings stay as configured on the NPort"
			if line.once("nport-command-port") {
				log.Warn(msg, "command_port", o.cmdAddr, "settings", o.configured.String(), "err", err)
			} else {
				log.Debug(msg, "command_port", o.cmdAddr, "err", err)
			}
			line.explained() // that was the warning: settings mismatches need none
		}
	}
	data, err := dial(ctx, t, opts)
	if err != nil {
		if cmd != nil {
			cmd.Close()
		}
		return nil, err
	}
	d := &nportDevice{
		streamConn: streamConn{ident: ident{kind: t.Kind, addr: t.Addr()}, conn: data},
		FixedLine:  line,
		log:        log,
		configured: o.configured,
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if cmd != nil {
		d.ctl = newNPortControl(cmd, log, o.timeout, d.controlLost)
		want := o.apply.Merge(o.configured)
		// Taken here, released by initialise: Port calls go after it.
		d.ctl.reqMu.Lock()
		d.wg.Go(func() { d.initialise(want) })
	}
	return d, nil
}

// once reports true the first time it is called with key on f: a warning
// about the device rather than one connection is logged once per
// FixedLine, that is once per bridge link.
func (f *FixedLine) once(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.warned[key] {
		return false
	}
	if f.warned == nil {
		f.warned = make(map[string]bool)
	}
	f.warned[key] = true
	return true
}

// explained makes later settings mismatches log at debug: a warning that
// says why the line is fixed was logged already.
func (f *FixedLine) explained() {
	f.mu.Lock()
	f.logged = true
	f.mu.Unlock()
}

// dialAddr dials addr with the Options' dialer and timeout.
func dialAddr(ctx context.Context, addr string, opts *Options) (net.Conn, error) {
	timeout := opts.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := opts.Dial
	if d == nil {
		d = (&net.Dialer{}).DialContext
	}
	return d(ctx, "tcp", addr)
}

// initialise sends the settings known at open (route's, or the guest's
// over them) and TX_FIFO, as Moxa's driver does on open. With no settings
// known it leaves the NPort as configured until the guest sets some.
func (d *nportDevice) initialise(want rfc2217.Settings) {
	defer d.ctl.reqMu.Unlock() // locked by openNPort
	if want == (rfc2217.Settings{}) {
		return
	}
	eff, err := d.ctl.apply(d.ctx, want.Merge(nportDefaults()))
	if err != nil {
		if d.ctx.Err() == nil {
			d.log.Warn("devices: nport: initial line settings", "settings", want.String(), "err", err)
		}
		return
	}
	d.log.Info("devices: nport line settings applied through the command port", "settings", eff.String())
	if f, err := d.ctl.call(d.ctx, aspp.AppendTxFIFO(nil, nportTxFIFO)); err != nil || !f.OK() {
		d.log.Debug("devices: nport TX_FIFO", "answer", f, "err", err) // Moxa's driver ignores the answer too
	}
}

// controlLost runs on the command reader when the command session ended by
// itself (the NPort closed it, or its stream went out of step). Like
// Moxa's daemon, the device then ends the data session too: the owner
// reconnects both and applies the settings again.
func (d *nportDevice) controlLost(err error) {
	if d.closed.Load() {
		return
	}
	d.log.Warn("devices: nport command connection lost; closing the data connection to reconnect both", "err", err)
	d.conn.Close() // not streamConn.close: Read then names the cause, not ErrClosed
}

func (d *nportDevice) Read(p []byte) (int, error) {
	n, err := d.conn.Read(p)
	if err != nil && d.ctl != nil && !d.closed.Load() {
		if cerr := d.ctl.readErr(); cerr != nil {
			return n, fmt.Errorf("devices: %s %s: command connection lost: %w", d.streamConn.kind, d.streamConn.addr, cerr)
		}
	}
	return n, d.readErr(err)
}

func (d *nportDevice) Write(p []byte) (int, error) {
	n, err := d.conn.Write(p)
	return n, d.writeErr(err)
}

// Close closes both connections and waits for the device's goroutines. It
// is idempotent.
func (d *nportDevice) Close() error {
	var err error
	d.once.Do(func() {
		if _, err = d.close(); errors.Is(err, net.ErrClosed) {
			err = nil // controlLost closed it already
		}
		d.cancel()
		if d.ctl != nil {
			d.ctl.close()
		}
		d.wg.Wait()
	})
	return err
}

// LineControl reports whether line settings and modem control reach the
// NPort (its command port is connected).
func (d *nportDevice) LineControl() bool { return d.ctl != nil && d.ctl.readErr() == nil }

// Mismatch describes the latest command the NPort did not take or answer
// (or, without a command port, the latest settings request the fixed line
// could not take); "" if none.
func (d *nportDevice) Mismatch() string {
	if d.ctl == nil {
		return d.FixedLine.Mismatch()
	}
	d.ctl.mu.Lock()
	defer d.ctl.mu.Unlock()
	return d.ctl.mismatch
}

// Settings returns the line settings in effect as far as the device knows
// (zero fields: unknown).
func (d *nportDevice) Settings() rfc2217.Settings {
	if d.ctl == nil {
		return d.configured
	}
	d.ctl.mu.Lock()
	defer d.ctl.mu.Unlock()
	return d.ctl.settings
}

// SetSettings implements rfc2217.Port: the set fields of s over the
// settings in effect go to the NPort; the answer is what it accepted.
func (d *nportDevice) SetSettings(ctx context.Context, s rfc2217.Settings) (rfc2217.Settings, error) {
	if d.ctl == nil {
		return d.FixedLine.SetSettings(ctx, s)
	}
	d.ctl.reqMu.Lock()
	defer d.ctl.reqMu.Unlock()
	cur := d.Settings()
	if s == (rfc2217.Settings{}) {
		return cur, nil // a query: nothing to send (the NPort has no query)
	}
	want := s.Merge(cur).Merge(d.configured).Merge(nportDefaults())
	if want == cur {
		return cur, nil
	}
	eff, err := d.ctl.apply(ctx, want)
	if err != nil {
		return eff, fmt.Errorf("devices: %s %s: %w", d.streamConn.kind, d.streamConn.addr, err)
	}
	return eff, nil
}

func (d *nportDevice) SetDTR(ctx context.Context, on bool) error {
	if d.ctl == nil {
		return d.FixedLine.SetDTR(ctx, on)
	}
	d.ctl.reqMu.Lock()
	defer d.ctl.reqMu.Unlock()
	_, rts := d.ctl.lines()
	return d.ctl.lineCtrl(ctx, on, rts)
}

func (d *nportDevice) SetRTS(ctx context.Context, on bool) error {
	if d.ctl == nil {
		return d.FixedLine.SetRTS(ctx, on)
	}
	d.ctl.reqMu.Lock()
	defer d.ctl.reqMu.Unlock()
	dtr, _ := d.ctl.lines()
	return d.ctl.lineCtrl(ctx, dtr, on)
}

func (d *nportDevice) SetBreak(ctx context.Context, on bool) error {
	if d.ctl == nil {
		return d.FixedLine.SetBreak(ctx, on)
	}
	d.ctl.reqMu.Lock()
	defer d.ctl.reqMu.Unlock()
	if err := d.ctl.simple(ctx, "BREAK "+onOff(on), aspp.AppendBreak(nil, on)); err != nil {
		return err
	}
	d.ctl.mu.Lock()
	d.ctl.brk = on
	d.ctl.mu.Unlock()
	return nil
}

// Purge flushes the NPort's buffers: the access server's receive buffer
// (data from the serial line) is the NPort's RX, its transmit buffer the
// NPort's TX.
func (d *nportDevice) Purge(ctx context.Context, what rfc2217.PurgeTarget) error {
	if d.ctl == nil {
		return d.FixedLine.Purge(ctx, what)
	}
	sel := aspp.FlushBoth
	switch what {
	case rfc2217.PurgeRX:
		sel = aspp.FlushRX
	case rfc2217.PurgeTX:
		sel = aspp.FlushTX
	}
	d.ctl.reqMu.Lock()
	defer d.ctl.reqMu.Unlock()
	return d.ctl.simple(ctx, "FLUSH "+sel.String(), aspp.AppendFlush(nil, sel))
}

// ModemState returns the modem inputs the NPort last reported (its
// PORT_INIT answer and NOTIFY frames); all lines down until it reported
// any.
func (d *nportDevice) ModemState(ctx context.Context) (rfc2217.ModemState, error) {
	if d.ctl == nil {
		return d.FixedLine.ModemState(ctx)
	}
	m, _ := d.ctl.modemState()
	return m, nil
}

// ModemKnown reports whether the NPort has reported its modem inputs yet
// (ModemState reads all lines down until it has).
func (d *nportDevice) ModemKnown() bool {
	if d.ctl == nil {
		return false
	}
	_, ok := d.ctl.modemState()
	return ok
}

// LineState returns the line errors and BREAKs the NPort reported since
// the last call (NOTIFY events), and clears them.
func (d *nportDevice) LineState(context.Context) (rfc2217.LineState, error) {
	if d.ctl == nil {
		return 0, notSupported(d.streamConn.kind, d.streamConn.addr, "line state")
	}
	return d.ctl.takeLineEvents(), nil
}
