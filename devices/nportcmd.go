package devices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/vspc-bridge/vspc-bridge/aspp"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// Limits and defaults of the NPort command port.
const (
	// DefaultNPortCommandTimeout bounds the wait for the NPort's answer to
	// one command. Moxa's driver waits 10 s; a guest's RFC 2217 request
	// gets 3 s from the VM side, so the answer must come well within that.
	DefaultNPortCommandTimeout = 2 * time.Second
	// nportTxFIFO is the UART FIFO depth Moxa's driver announces on open
	// (a 16550A).
	nportTxFIFO = 16
	// nportIPv6Greeting is the length of the exchange Moxa's daemon makes
	// on the command socket of an IPv6 connection before any command
	// (fact sheet §1.2): 16 bytes each way, contents not checked.
	nportIPv6Greeting = 16
)

// nportDefaults fill the fields of a PORT_INIT that neither the route nor
// the guest set (PORT_INIT has no "leave as is"): 9600 8N1, no flow
// control, the route default.
func nportDefaults() rfc2217.Settings {
	return rfc2217.Settings{Baud: 9600, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone}
}

// errNoAnswer is wrapped when the NPort did not answer a command in time.
var errNoAnswer = errors.New("no answer")

// nportControl is a session on an NPort's command port (package aspp) for
// one serial port: it sends one command at a time and waits for its
// answer (bounded), answers the NPort's keep-alive polls, and keeps the
// modem inputs and line events the NPort reports.
//
// Ownership: nportControl owns conn and the reader goroutine (the only
// caller of conn.Read). Writes come from the command caller (under reqMu)
// and from the reader (ALIVE), each one Write under wmu. close closes conn,
// which ends the reader, and waits for it.
type nportControl struct {
	conn    net.Conn
	addr    string // the command port's host:port, for messages
	log     *slog.Logger
	timeout time.Duration
	greet   bool            // IPv6: 16-byte exchange before the first command
	lost    func(err error) // called once by the reader when the session ends by itself

	reqMu sync.Mutex // one command in flight (Moxa's driver has one command slot)
	wmu   sync.Mutex // one Write at a time on conn

	wg        sync.WaitGroup // the reader
	closeOnce sync.Once

	mu       sync.Mutex      // guards the fields below
	waitOp   aspp.Opcode     // the opcode whose answer is awaited; 0 when none
	answer   chan aspp.Frame // delivers that answer (cap 1)
	greeted  chan struct{}   // closed when the IPv6 greeting came back (or not needed)
	modem    aspp.MSR        // modem inputs last reported (PORT_INIT reply, NOTIFY)
	haveMSR  bool
	events   rfc2217.LineState // line events reported since the last LineState call
	settings rfc2217.Settings  // in effect: what the NPort accepted last
	dtr, rts bool
	brk      bool
	mismatch string // the latest command the NPort did not take (or answer); cleared when settings are taken in full
	warned   bool   // a mismatch was logged at warn
	rerr     error  // why the reader stopped
	silent   bool   // the last command went unanswered: the next ones do not wait (one stall, not one per command)
	polls    int    // keep-alive polls answered
}

func newNPortControl(conn net.Conn, log *slog.Logger, timeout time.Duration, lost func(error)) *nportControl {
	if timeout <= 0 {
		timeout = DefaultNPortCommandTimeout
	}
	c := &nportControl{
		conn: conn, addr: conn.RemoteAddr().String(), log: log, timeout: timeout, lost: lost,
		greet:   needsGreeting(conn.RemoteAddr()),
		answer:  make(chan aspp.Frame, 1),
		greeted: make(chan struct{}),
		dtr:     true, rts: true,
	}
	if !c.greet {
		close(c.greeted)
	}
	c.wg.Go(c.readLoop)
	return c
}

// needsGreeting reports whether Moxa's daemon would make the 16-byte
// exchange on this connection: an IPv6 peer (not an IPv4-mapped one).
func needsGreeting(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.To4() == nil && ta.IP.To16() != nil
}

// close ends the session and waits for the reader. Idempotent.
func (c *nportControl) close() {
	c.closeOnce.Do(func() {
		c.conn.Close()
		c.wg.Wait()
	})
}

func (c *nportControl) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.conn.Write(b)
	return err
}

// readLoop is the reader goroutine: it frames the NPort's stream, answers
// POLLING, records NOTIFY and hands answers to the waiting command.
func (c *nportControl) readLoop() {
	var dec aspp.ReplyDecoder
	buf := make([]byte, 256)
	skip := 0
	if c.greet {
		// Moxa's daemon sends 16 arbitrary bytes and wants 16 back before
		// the first command; greeted is closed when they came.
		skip = nportIPv6Greeting
		if err := c.write(make([]byte, nportIPv6Greeting)); err != nil {
			c.log.Debug("devices: nport IPv6 greeting", "err", err) // the Read below fails too
		}
	}
	var err error
	for {
		var k int
		k, err = c.conn.Read(buf)
		p := buf[:k]
		if skip > 0 && k > 0 {
			n := min(skip, k)
			skip -= n
			p = p[n:]
			if skip == 0 {
				close(c.greeted)
			}
		}
		if len(p) > 0 {
			if derr := dec.Decode(p, c.frame); derr != nil {
				err = derr
				break
			}
		}
		if err != nil {
			break
		}
	}
	c.mu.Lock()
	c.rerr = err
	c.mu.Unlock()
	if c.lost != nil {
		c.lost(err)
	}
}

// frame handles one frame from the NPort (on the reader goroutine).
func (c *nportControl) frame(f aspp.Frame) error {
	switch f.Op {
	case aspp.Polling:
		id, _ := f.PollID()
		if err := c.write(aspp.AppendAlive(nil, id)); err != nil {
			return fmt.Errorf("devices: nport command port %s: answering keep-alive: %w", c.addr, err)
		}
		c.mu.Lock()
		c.polls++
		c.mu.Unlock()
		c.log.Debug("devices: nport keep-alive answered", "id", id)
		return nil
	case aspp.Notify:
		e, m, _ := f.Notify()
		c.mu.Lock()
		if e&aspp.EventModemChange != 0 {
			c.modem, c.haveMSR = m, true
		}
		c.events |= lineEvents(e)
		c.mu.Unlock()
		c.log.Debug("devices: nport notify", "events", e, "modem", m)
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.silent = false // it answers again
	if f.Op != c.waitOp {
		// Typically the answer to a command that timed out. (One that
		// comes while a command with the same opcode waits is taken as
		// its answer: replies carry nothing else to match on, and Moxa's
		// driver matches the same way.)
		c.log.Debug("devices: nport answer nobody waits for", "answer", f)
		return nil
	}
	c.waitOp = 0
	c.answer <- f // cap 1, and only one waiter at a time
	return nil
}

// lineEvents maps NOTIFY event bits to RFC 2217 line-state bits.
func lineEvents(e aspp.Events) rfc2217.LineState {
	var l rfc2217.LineState
	if e&aspp.EventParity != 0 {
		l |= rfc2217.LineParity
	}
	if e&aspp.EventFraming != 0 {
		l |= rfc2217.LineFraming
	}
	if e&(aspp.EventHWOverrun|aspp.EventSWOverrun) != 0 {
		l |= rfc2217.LineOverrun
	}
	if e&aspp.EventBreak != 0 {
		l |= rfc2217.LineBreak
	}
	return l
}

// call sends one request and waits for the answer with the same opcode,
// at most c.timeout (or ctx). Callers hold reqMu. A missing answer is an
// error wrapping errNoAnswer; if it comes later, nobody waits for it and
// it is dropped.
func (c *nportControl) call(ctx context.Context, req []byte) (aspp.Frame, error) {
	op := aspp.Opcode(req[0])
	timer := time.NewTimer(c.timeout)
	defer timer.Stop()
	select {
	case <-c.greeted:
	case <-timer.C:
		return aspp.Frame{}, fmt.Errorf("devices: nport command port %s: IPv6 greeting: %w within %v", c.addr, errNoAnswer, c.timeout)
	case <-ctx.Done():
		return aspp.Frame{}, ctx.Err()
	}
	c.mu.Lock()
	if c.rerr != nil {
		err := c.rerr
		c.mu.Unlock()
		return aspp.Frame{}, fmt.Errorf("devices: nport command port %s: %w", c.addr, err)
	}
	c.waitOp = op
	silent := c.silent
	c.mu.Unlock()
	if err := c.write(req); err != nil {
		c.mu.Lock()
		c.waitOp = 0
		c.mu.Unlock()
		return aspp.Frame{}, fmt.Errorf("devices: nport command port %s: %v: %w", c.addr, op, err)
	}
	var err error
	var expired <-chan time.Time = timer.C
	if silent {
		// It did not answer the last command: do not stall this one (and
		// the guest's data behind it) again. An answer clears silent.
		now := make(chan time.Time)
		close(now)
		expired = now
	}
	select {
	case f := <-c.answer:
		return f, nil
	case <-expired:
		if silent {
			err = fmt.Errorf("devices: nport command port %s: %v: %w (nor to the command before; not waiting)", c.addr, op, errNoAnswer)
		} else {
			err = fmt.Errorf("devices: nport command port %s: %v: %w within %v", c.addr, op, errNoAnswer, c.timeout)
		}
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) { // the caller's deadline came first
			err = fmt.Errorf("devices: nport command port %s: %v: %w before the caller's deadline", c.addr, op, errNoAnswer)
		} else {
			err = ctx.Err() // closing
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waitOp != op { // the answer came as we gave up: take it
		return <-c.answer, nil
	}
	c.waitOp = 0
	if errors.Is(err, errNoAnswer) {
		c.silent = true
	}
	return aspp.Frame{}, err
}

// noteMismatch records what the NPort did not take and logs it: the first
// time at warn, later at debug.
func (c *nportControl) noteMismatch(msg string, err error) {
	c.mu.Lock()
	first := !c.warned
	c.warned = true
	c.mismatch = msg
	c.mu.Unlock()
	if first {
		c.log.Warn("devices: nport command not taken; data keeps flowing", "detail", msg, "err", err)
	} else {
		c.log.Debug("devices: nport command not taken", "detail", msg, "err", err)
	}
}

// portInit builds the PORT_INIT for settings s (all fields set) and the
// current DTR/RTS, and the settings it stands for (1.5 stop bits are the
// two-stop bit, which the UART takes as 1.5 only with 5 data bits).
func portInit(s rfc2217.Settings, dtr, rts bool) (aspp.Init, rfc2217.Settings, error) {
	var parity aspp.Parity
	switch s.Parity {
	case rfc2217.ParityNone:
		parity = aspp.ParityNone
	case rfc2217.ParityOdd:
		parity = aspp.ParityOdd
	case rfc2217.ParityEven:
		parity = aspp.ParityEven
	case rfc2217.ParityMark:
		parity = aspp.ParityMark
	case rfc2217.ParitySpace:
		parity = aspp.ParitySpace
	default:
		return aspp.Init{}, s, fmt.Errorf("devices: nport: parity %v", s.Parity)
	}
	two := s.StopSize == rfc2217.Stop2 || s.StopSize == rfc2217.Stop15
	mode, err := aspp.MakeMode(int(s.DataSize), parity, two)
	if err != nil {
		return aspp.Init{}, s, fmt.Errorf("devices: nport: %w", err)
	}
	eff := s
	if two {
		eff.StopSize = rfc2217.Stop2
		if s.DataSize == 5 {
			eff.StopSize = rfc2217.Stop15
		}
	}
	hw := s.Flow == rfc2217.FlowHardware
	sw := s.Flow == rfc2217.FlowXONXOFF
	return aspp.Init{Baud: aspp.IndexOf(s.Baud), Mode: mode, DTR: dtr, RTS: rts,
		HWFlow: [2]bool{hw, hw}, IXON: sw, IXOFF: sw}, eff, nil
}

// apply sends PORT_INIT for want (all fields set), then SETBAUD when the
// rate is not in the index table and XONXOFF for software flow control,
// as Moxa's driver does (fact sheet §2.4). It returns the settings in
// effect afterwards: want where the NPort accepted it, the previous
// settings where it refused, want where it did not answer (recorded as a
// mismatch). Callers hold reqMu.
func (c *nportControl) apply(ctx context.Context, want rfc2217.Settings) (_ rfc2217.Settings, rerr error) {
	c.mu.Lock()
	prev, dtr, rts := c.settings, c.dtr, c.rts
	c.mu.Unlock()
	taken := true // every part answered and accepted
	note := func(msg string, err error) {
		taken = false
		c.noteMismatch(msg, err)
	}
	defer func() {
		if taken && rerr == nil { // a request taken in full clears an earlier mismatch
			c.mu.Lock()
			c.mismatch = ""
			c.mu.Unlock()
		}
	}()
	p, eff, err := portInit(want, dtr, rts)
	if err != nil {
		return prev, err
	}
	f, err := c.call(ctx, aspp.AppendPortInit(nil, p))
	if err != nil {
		if !errors.Is(err, errNoAnswer) {
			return prev, err
		}
		note(fmt.Sprintf("asked the NPort for %v: PORT_INIT not answered within %v; assuming it took", want, c.timeout), err)
		c.setSettings(eff)
		return eff, nil
	}
	m, merr := f.Modem()
	if errors.Is(merr, aspp.ErrRefused) {
		note(fmt.Sprintf("asked the NPort for %v: refused (PORT_INIT answered FF FF FF); still %v", want, prev), merr)
		return prev, nil
	}
	if merr != nil {
		note(fmt.Sprintf("asked the NPort for %v: bad PORT_INIT answer %v", want, f), merr)
		return prev, nil
	}
	c.mu.Lock()
	c.modem, c.haveMSR = m.MSR()|(c.modem&aspp.MSRRI), true
	c.mu.Unlock()
	if p.Baud == aspp.BaudByValue {
		f, err := c.call(ctx, aspp.AppendSetBaud(nil, want.Baud))
		switch {
		case err != nil && !errors.Is(err, errNoAnswer):
			return prev, err
		case err != nil:
			note(fmt.Sprintf("asked the NPort for %d baud: SETBAUD not answered within %v; assuming it took", want.Baud, c.timeout), err)
		case !f.OK():
			note(fmt.Sprintf("asked the NPort for %d baud: refused (%v); still %d baud", want.Baud, f, prev.Baud), nil)
			eff.Baud = prev.Baud
		}
	}
	if p.IXON || p.IXOFF {
		f, err := c.call(ctx, aspp.AppendXonXoff(nil, 0x11, 0x13))
		switch {
		case err != nil && !errors.Is(err, errNoAnswer):
			return eff, err
		case err != nil:
			note(fmt.Sprintf("XONXOFF characters for %v not answered within %v", want, c.timeout), err)
		case !f.OK():
			note(fmt.Sprintf("XONXOFF characters for %v refused (%v)", want, f), nil)
		}
	}
	c.setSettings(eff)
	return eff, nil
}

func (c *nportControl) setSettings(s rfc2217.Settings) {
	c.mu.Lock()
	c.settings = s
	c.mu.Unlock()
}

// simple sends a request answered by "op O K" and reports whether it was
// taken; no answer is recorded as a mismatch and taken as done.
func (c *nportControl) simple(ctx context.Context, what string, req []byte) error {
	f, err := c.call(ctx, req)
	switch {
	case errors.Is(err, errNoAnswer):
		c.noteMismatch(what+": not answered within "+c.timeout.String()+"; assuming it took", err)
		return nil
	case err != nil:
		return err
	case !f.OK():
		return fmt.Errorf("devices: nport command port %s: %s: refused (%v)", c.addr, what, f)
	}
	return nil
}

// lines returns the DTR and RTS last set (a request sets both: the one
// not asked for is sent as it is).
func (c *nportControl) lines() (dtr, rts bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dtr, c.rts
}

// lineCtrl sets DTR and RTS. Callers hold reqMu.
func (c *nportControl) lineCtrl(ctx context.Context, dtr, rts bool) error {
	if err := c.simple(ctx, fmt.Sprintf("DTR %s, RTS %s", onOff(dtr), onOff(rts)), aspp.AppendLineCtrl(nil, dtr, rts)); err != nil {
		return err
	}
	c.mu.Lock()
	c.dtr, c.rts = dtr, rts
	c.mu.Unlock()
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// modemState returns the modem inputs in RFC 2217 bits.
func (c *nportControl) modemState() (rfc2217.ModemState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var m rfc2217.ModemState
	if c.modem&aspp.MSRCTS != 0 {
		m |= rfc2217.ModemCTS
	}
	if c.modem&aspp.MSRDSR != 0 {
		m |= rfc2217.ModemDSR
	}
	if c.modem&aspp.MSRRI != 0 {
		m |= rfc2217.ModemRI
	}
	if c.modem&aspp.MSRDCD != 0 {
		m |= rfc2217.ModemCD
	}
	return m, c.haveMSR
}

// takeLineEvents returns the line events reported since the last call
// and clears them (like reading a UART's line status register).
func (c *nportControl) takeLineEvents() rfc2217.LineState {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.events
	c.events = 0
	return e
}

// readErr returns why the reader stopped (nil while it runs).
func (c *nportControl) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rerr
}
