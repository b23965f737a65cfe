package rfc2217

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// Defaults for ClientOptions.
const (
	DefaultAckTimeout       = time.Second
	DefaultHandshakeTimeout = 3 * time.Second // what pyserial's client allows
	DefaultClientSignature  = "vspc-bridge"
	DefaultMaxBuffered      = 64 << 10
	maxControlQueue         = 16 << 10 // negotiation replies and requests not yet written
	readChunk               = 4 << 10
)

// ClientOptions configure a Client. The zero value is usable.
type ClientOptions struct {
	// Logger receives the session's log lines (quirks of the server,
	// missing or adjusted acknowledgements). Nil discards them.
	Logger *slog.Logger

	// AckTimeout bounds how long a Port call waits for the server's
	// acknowledgement before it carries on with the requested value and a
	// log line. Zero means DefaultAckTimeout.
	AckTimeout time.Duration

	// HandshakeTimeout bounds how long NewClient waits for the server to
	// agree to COM-PORT-OPTION and BINARY. Zero means
	// DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// Signature is sent when the server asks for ours (SIGNATURE with no
	// text). Empty means DefaultClientSignature.
	Signature string

	// Initial settings are applied by NewClient. Unset (zero) fields are
	// queried instead, so Settings reports what the server has.
	Initial Settings

	// Background makes NewClient return as soon as the session is
	// started, so that data flows from the first moment: option
	// negotiation and Initial proceed beside it, on a goroutine the Client
	// owns. Port calls wait for them (their own deadline still applies).
	// Until the server has answered our WILL BINARY (or HandshakeTimeout
	// has passed), a Write holding a CR waits, because a CR is sent as CR
	// NUL in NVT and alone in BINARY; other data goes at once.
	Background bool

	// OnNotify, if set, is called for every NOTIFY-LINESTATE and
	// NOTIFY-MODEMSTATE from the server, with the latest value of both. It
	// runs on the Client's reader goroutine: it must not block, and must
	// not call Client methods that wait for the server (Port methods), or
	// data and acknowledgements stall until they time out.
	OnNotify func(LineState, ModemState)

	// MaxBuffered bounds received data not yet Read, and data accepted by
	// Write but not yet sent, in bytes. When received data reaches it the
	// reader stops reading the connection (TCP back-pressure); when the
	// send queue reaches it Write waits. Zero means DefaultMaxBuffered.
	MaxBuffered int
}

// Client is an RFC 2217 client session: it controls the serial port of an
// access server (ser2net, an NPort in RFC 2217 mode, pyserial's server,
// sredird) over one telnet connection. It implements Port for line control
// and io.ReadWriter for the data, with IAC escaping done for the caller.
//
// Ownership: the Client owns conn from NewClient on, and two goroutines
// that it starts: the reader (the only caller of conn.Read; decodes,
// answers negotiation, records acknowledgements and notifications, queues
// data for Read) and the writer (the only caller of conn.Write; sends
// control bytes first, then data, and holds data back while the server has
// sent FLOWCONTROL-SUSPEND). Close closes conn, which unblocks both, and
// waits for them; it also unblocks every Read, Write and Port call.
//
// All methods are safe for concurrent use. Port calls are serialised: one
// batch of requests awaits its acknowledgements at a time, for at most
// AckTimeout; a missing acknowledgement is logged and the requested value
// assumed. Data never waits for an acknowledgement.
type Client struct {
	conn        io.ReadWriteCloser
	log         *slog.Logger
	ackTimeout  time.Duration
	signature   string
	onNotify    func(LineState, ModemState)
	maxBuffered int

	reqMu sync.Mutex // serialises Port calls (one outstanding batch)

	ready    chan struct{}      // closed when negotiation and Initial are done (Background)
	bgCancel context.CancelFunc // ends the Background setup; nil without Background

	wg        sync.WaitGroup // reader and writer goroutines
	closeOnce sync.Once
	closeErr  error

	mu      sync.Mutex    // guards all fields below
	changed chan struct{} // made by a waiter, closed on the next state change (broadcast)
	closed  bool
	neg     telnet.Options
	dec     telnet.Decoder // used by the reader goroutine only, under mu

	rbuf []byte // received data not yet Read
	rerr error  // why the reader stopped (io.EOF, a decode error …)

	ctl     []byte // control bytes for the writer: negotiation, requests
	wbuf    []byte // escaped data for the writer
	wqueued uint64 // escaped data bytes ever queued …
	wdone   uint64 // … and ever written
	werr    error  // why the writer stopped

	settled   bool // option negotiation finished (or timed out)
	suspended bool // the server sent FLOWCONTROL-SUSPEND
	acks      [numSlots]ack
	settings  Settings // in effect: last acknowledged or, lacking an ack, requested
	line      LineState
	modem     ModemState
	haveModem bool
	modemPoll bool // a poll for the modem state went unanswered: do not stall again
	serverSig string
	quirks    map[string]bool     // quirks already logged at Warn
	unacked   map[ackSlot]Message // change requests without acknowledgement, latest per slot
}

// NewClient starts an RFC 2217 session on conn, a connection to an access
// server that the caller opened; the Client owns it from now on (on error
// it is closed). NewClient negotiates COM-PORT-OPTION (sending WILL 44 and
// accepting the server's own DO 44 or WILL 44), BINARY both ways and SGA,
// refusing every other option, then applies opts.Initial. ctx bounds only
// this setup; afterwards the session lives until Close.
//
// A server that refuses COM-PORT-OPTION, or does not answer within
// HandshakeTimeout, still gives a working data stream; Port methods then
// return ErrNotSupported. With opts.Background, NewClient does not wait:
// see ClientOptions.Background.
func NewClient(ctx context.Context, conn io.ReadWriteCloser, opts ClientOptions) (*Client, error) {
	c := &Client{
		conn:        conn,
		log:         opts.Logger,
		ackTimeout:  opts.AckTimeout,
		signature:   opts.Signature,
		onNotify:    opts.OnNotify,
		maxBuffered: opts.MaxBuffered,
		quirks:      make(map[string]bool),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.ackTimeout <= 0 {
		c.ackTimeout = DefaultAckTimeout
	}
	if c.signature == "" {
		c.signature = DefaultClientSignature
	}
	if c.maxBuffered <= 0 {
		c.maxBuffered = DefaultMaxBuffered
	}
	hsTimeout := opts.HandshakeTimeout
	if hsTimeout <= 0 {
		hsTimeout = DefaultHandshakeTimeout
	}

	// What we ask for; Enable also accepts the peer asking for it.
	c.ctl = c.neg.Enable(c.ctl, telnet.Local, telnet.ComPort)
	c.ctl = c.neg.Enable(c.ctl, telnet.Local, telnet.Binary)
	c.ctl = c.neg.Enable(c.ctl, telnet.Remote, telnet.Binary)
	c.ctl = c.neg.Enable(c.ctl, telnet.Local, telnet.SuppressGA)
	c.ctl = c.neg.Enable(c.ctl, telnet.Remote, telnet.SuppressGA)
	// pyserial's server announces WILL 44: agree (it also takes our WILL).
	c.neg.Accept(telnet.Remote, telnet.ComPort, true)

	c.ready = make(chan struct{})
	c.wg.Go(c.readLoop)
	c.wg.Go(c.writeLoop)

	if opts.Background {
		bg, cancel := context.WithCancel(context.Background())
		c.bgCancel = cancel
		c.wg.Go(func() {
			defer close(c.ready)
			if err := c.handshake(bg, hsTimeout); err != nil {
				c.log.Debug("rfc2217: negotiation ended", "err", err) // Read reports the cause
				return
			}
			if _, err := c.applySettings(bg, opts.Initial, true); err != nil && !errors.Is(err, ErrNotSupported) && bg.Err() == nil {
				c.log.Warn("rfc2217: initial line settings", "settings", opts.Initial.String(), "err", err)
			}
		})
		return c, nil
	}
	defer close(c.ready)
	if err := c.handshake(ctx, hsTimeout); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := c.applySettings(ctx, opts.Initial, true); err != nil && !errors.Is(err, ErrNotSupported) {
		c.Close()
		return nil, err
	}
	return c, nil
}

// awaitReady waits until the Background setup is done (at once without
// Background).
func (c *Client) awaitReady(ctx context.Context) error {
	select {
	case <-c.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handshake waits until the options we asked for are settled.
func (c *Client) handshake(ctx context.Context, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() { // Writes holding a CR wait for this
		c.settled = true
		c.broadcastLocked()
	}()
	for {
		if c.closed {
			return net.ErrClosed
		}
		if c.rerr != nil {
			return fmt.Errorf("rfc2217: connection ended during negotiation: %w", c.rerr)
		}
		pending := c.neg.Pending(telnet.Local, telnet.ComPort) ||
			c.neg.Pending(telnet.Local, telnet.Binary) || c.neg.Pending(telnet.Remote, telnet.Binary)
		if !pending {
			break
		}
		ch := c.changedLocked()
		c.mu.Unlock()
		select {
		case <-ch:
			c.mu.Lock()
			continue
		case <-ctx.Done():
			c.mu.Lock()
			return ctx.Err()
		case <-timer.C:
			c.mu.Lock()
		}
		c.log.Warn("rfc2217: server did not finish option negotiation", "timeout", timeout,
			"com_port", c.neg.Enabled(telnet.Local, telnet.ComPort),
			"binary_out", c.neg.Enabled(telnet.Local, telnet.Binary), "binary_in", c.neg.Enabled(telnet.Remote, telnet.Binary))
		break
	}
	if !c.neg.Enabled(telnet.Local, telnet.ComPort) {
		c.log.Warn("rfc2217: server does not speak COM-PORT-OPTION; line control unavailable, data only")
	}
	// Ask for the server's signature; nobody waits for it (pyserial's
	// server never answers).
	if c.neg.Enabled(telnet.Local, telnet.ComPort) {
		c.ctl = AppendMessage(c.ctl, Message{Command: Signature})
		c.broadcastLocked()
	}
	return nil
}

func (c *Client) broadcastLocked() {
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
}

// changedLocked returns the channel the next broadcast closes.
func (c *Client) changedLocked() <-chan struct{} {
	if c.changed == nil {
		c.changed = make(chan struct{})
	}
	return c.changed
}

// waitLocked releases mu until the next state change, ctx or timer fires.
// It reports false when ctx is done or the timer fired.
func (c *Client) waitLocked(ctx context.Context, timer <-chan time.Time) (ok bool) {
	ch := c.changedLocked()
	c.mu.Unlock()
	defer c.mu.Lock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	case <-timer:
		return false
	}
}

// quirkLocked logs a server oddity at Warn the first time and at Debug
// afterwards.
func (c *Client) quirkLocked(key, msg string, args ...any) {
	if c.quirks[key] {
		c.log.Debug(msg, args...)
		return
	}
	c.quirks[key] = true
	c.log.Warn(msg, args...)
}

// readLoop is the reader goroutine: the only caller of conn.Read.
func (c *Client) readLoop() {
	buf := make([]byte, readChunk)
	for {
		c.mu.Lock()
		for len(c.rbuf) >= c.maxBuffered && !c.closed {
			c.waitLocked(context.Background(), nil)
		}
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return
		}
		n, err := c.conn.Read(buf)
		var notify []func()
		c.mu.Lock()
		if n > 0 {
			derr := c.dec.Decode(buf[:n], func(ev telnet.Event) error {
				if f := c.handleEventLocked(ev); f != nil {
					notify = append(notify, f)
				}
				return nil
			})
			if derr != nil && err == nil {
				err = derr
			}
			if len(c.ctl) > maxControlQueue && err == nil {
				err = errors.New("rfc2217: server floods negotiation: control queue over limit")
			}
		}
		if err != nil {
			switch {
			case c.closed:
				c.rerr = net.ErrClosed
			case errors.Is(err, io.EOF):
				c.rerr = io.EOF
			default:
				c.rerr = fmt.Errorf("rfc2217: read: %w", err)
			}
		}
		c.broadcastLocked()
		c.mu.Unlock()
		for _, f := range notify {
			f()
		}
		if err != nil {
			return
		}
	}
}

// handleEventLocked applies one decoded event. It returns the OnNotify
// call to make once mu is released, if any.
func (c *Client) handleEventLocked(ev telnet.Event) func() {
	switch ev.Kind {
	case telnet.EventData:
		c.rbuf = append(c.rbuf, ev.Data...)
	case telnet.EventNegotiation:
		var ch *telnet.Change
		c.ctl, ch = c.neg.Receive(c.ctl, ev.Command, ev.Option)
		if ch != nil {
			c.log.Debug("rfc2217: option changed", "option", ch.Option, "side", ch.Side, "enabled", ch.Enabled)
			if ch.Option == telnet.Binary && ch.Side == telnet.Remote {
				c.dec.Binary = ch.Enabled
			}
		}
	case telnet.EventSubnegotiation:
		if ev.Option != telnet.ComPort {
			c.log.Debug("rfc2217: ignoring subnegotiation", "option", ev.Option, "len", len(ev.Data))
			return nil
		}
		m, err := Parse(ev.Data)
		if err != nil {
			c.quirkLocked("parse", "rfc2217: ignoring bad message from server", "err", err, "payload", fmt.Sprintf("% x", ev.Data))
			return nil
		}
		return c.handleMessageLocked(m)
	case telnet.EventCommand:
		c.log.Debug("rfc2217: ignoring telnet command", "command", ev.Command)
	}
	return nil
}

func (c *Client) handleMessageLocked(m Message) func() {
	if !m.Command.IsServer() {
		if m.Command == Signature && m.Text == "" {
			// Not RFC (the server should use 100), but harmless to answer.
			c.ctl = AppendMessage(c.ctl, Message{Command: Signature, Text: c.signature})
			return nil
		}
		c.quirkLocked("client-code", "rfc2217: server sent a client command code; ignored", "message", m)
		return nil
	}
	if m.Extra > 0 {
		c.quirkLocked("extra-"+m.Command.String(), "rfc2217: server padded a reply; extra bytes ignored (sredird does this)", "reply", m)
	}
	base := m.Command.Base()
	if s, ok := slotOf(base, m.Value); ok {
		c.acks[s].seq++
		c.acks[s].msg = m
		delete(c.unacked, s) // it answers this kind after all
	}
	switch base {
	case Signature:
		if m.Text == "" {
			c.ctl = AppendMessage(c.ctl, Message{Command: Signature, Text: c.signature})
			return nil
		}
		if c.serverSig != m.Text {
			c.log.Info("rfc2217: server signature", "signature", m.Text)
		}
		c.serverSig = m.Text
	case SetBaudrate:
		c.settings.Baud = m.Baud
	case SetDatasize:
		c.settings.DataSize = m.Value
	case SetParity:
		c.settings.Parity = m.Parity()
	case SetStopsize:
		c.settings.StopSize = m.StopSize()
	case SetControl:
		if v := m.Control(); v >= ControlFlowNone && v <= ControlFlowHardware {
			c.settings.Flow = FlowControl(v)
		}
	case NotifyLinestate, NotifyModemstate:
		if base == NotifyLinestate {
			c.line = m.LineState()
		} else {
			c.modem, c.haveModem = m.ModemState(), true
		}
		c.log.Debug("rfc2217: notification", "message", m)
		if f := c.onNotify; f != nil {
			line, modem := c.line, c.modem
			return func() { f(line, modem) }
		}
	case FlowControlSuspend:
		if !c.suspended {
			c.log.Debug("rfc2217: server suspended our output")
		}
		c.suspended = true
	case FlowControlResume:
		c.suspended = false
	}
	return nil
}

// writeLoop is the writer goroutine: the only caller of conn.Write.
func (c *Client) writeLoop() {
	var out []byte
	for {
		c.mu.Lock()
		for !c.closed && len(c.ctl) == 0 && (len(c.wbuf) == 0 || c.suspended) {
			c.waitLocked(context.Background(), nil)
		}
		if c.closed {
			c.mu.Unlock()
			return
		}
		out = append(out[:0], c.ctl...)
		c.ctl = c.ctl[:0]
		var nData int
		if !c.suspended {
			out = append(out, c.wbuf...)
			nData = len(c.wbuf)
			c.wbuf = c.wbuf[:0]
		}
		c.mu.Unlock()

		_, err := c.conn.Write(out)

		c.mu.Lock()
		if err != nil {
			if c.closed {
				c.werr = net.ErrClosed
			} else {
				c.werr = fmt.Errorf("rfc2217: write: %w", err)
			}
			c.broadcastLocked()
			c.mu.Unlock()
			return
		}
		c.wdone += uint64(nData)
		c.broadcastLocked()
		c.mu.Unlock()
		if cap(out) > 4*c.maxBuffered {
			out = nil
		}
	}
}

// Read reads data from the remote serial port, IAC-unescaped. It blocks
// until data arrives, the connection ends (io.EOF) or Close is called
// (net.ErrClosed). Data received before the end is delivered first.
func (c *Client) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.rbuf) == 0 {
		switch {
		case c.closed:
			return 0, net.ErrClosed
		case c.rerr != nil:
			return 0, c.rerr
		}
		c.waitLocked(context.Background(), nil)
	}
	n := copy(p, c.rbuf)
	c.rbuf = c.rbuf[:copy(c.rbuf, c.rbuf[n:])]
	if cap(c.rbuf) > 4*c.maxBuffered && len(c.rbuf) == 0 {
		c.rbuf = nil
	}
	c.broadcastLocked() // the reader may be waiting for room
	return n, nil
}

// Write sends p to the remote serial port, escaping IAC. It returns once
// the bytes were written to the connection; it waits while the send queue
// is full or the server has suspended our output (FLOWCONTROL-SUSPEND),
// until Close.
func (c *Client) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.wbuf) >= c.maxBuffered && !c.closed && c.werr == nil {
		c.waitLocked(context.Background(), nil)
	}
	if err := c.writeErrLocked(); err != nil {
		return 0, err
	}
	// A CR's encoding depends on whether the server took our WILL BINARY:
	// wait for the negotiation (Background; bounded by HandshakeTimeout).
	for !c.settled && !c.closed && c.rerr == nil && bytes.IndexByte(p, '\r') >= 0 {
		c.waitLocked(context.Background(), nil)
	}
	if err := c.writeErrLocked(); err != nil {
		return 0, err
	}
	n0 := len(c.wbuf)
	if c.neg.Enabled(telnet.Local, telnet.Binary) {
		c.wbuf = telnet.AppendData(c.wbuf, p)
	} else {
		c.wbuf = telnet.AppendText(c.wbuf, p)
	}
	c.wqueued += uint64(len(c.wbuf) - n0)
	target := c.wqueued
	c.broadcastLocked()
	for c.wdone < target {
		if err := c.writeErrLocked(); err != nil {
			return 0, err
		}
		c.waitLocked(context.Background(), nil)
	}
	return len(p), nil
}

func (c *Client) writeErrLocked() error {
	switch {
	case c.closed:
		return net.ErrClosed
	case c.werr != nil:
		return c.werr
	}
	return nil
}

// Close ends the session: it closes the connection, unblocks every
// pending call and waits for the Client's goroutines. It is idempotent and
// returns the error of closing the connection.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.broadcastLocked()
		c.mu.Unlock()
		if c.bgCancel != nil {
			c.bgCancel()
		}
		c.closeErr = c.conn.Close()
		c.wg.Wait()
	})
	return c.closeErr
}

// Settings returns the line settings last acknowledged by the server (or
// requested, where the server did not answer); zero fields are unknown.
func (c *Client) Settings() Settings {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.settings
}

// LineState returns the last NOTIFY-LINESTATE value (0 before any).
func (c *Client) LineState() LineState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.line
}

// ServerSignature returns the server's SIGNATURE text, "" if it sent none.
func (c *Client) ServerSignature() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.serverSig
}

// ComPort reports whether the server agreed to COM-PORT-OPTION.
func (c *Client) ComPort() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.neg.Enabled(telnet.Local, telnet.ComPort)
}

// Suspended reports whether the server has suspended our output with
// FLOWCONTROL-SUSPEND (Write waits until it resumes).
func (c *Client) Suspended() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.suspended
}

var _ io.ReadWriteCloser = (*Client)(nil)
