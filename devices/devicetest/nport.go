//go:build linux

package devicetest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vspc-bridge/vspc-bridge/aspp"
)

// NPortOptions configure StartNPort. The zero value is a TCP Server mode
// port with "Allow driver control" on, at 9600 8N1, DSR/CTS/DCD off,
// NOTIFY frames sent unprompted, no keep-alive polls.
type NPortOptions struct {
	// NoCommandPort leaves the command port closed (connections to
	// CmdAddr are refused), like an NPort with "Allow driver control" off.
	NoCommandPort bool

	// Default are the settings a new session starts from (the port's
	// settings in the NPort's console). A zero Baud means 9600, a zero
	// Mode 8N1; DTR and RTS start on.
	Default NPortLine

	// Modem are the modem inputs at start (SetModem changes them).
	Modem aspp.Modem

	// NotifyGated sends NOTIFY frames only after START_NOTIFY. Whether a
	// real NPort in TCP Server mode notifies unprompted is unknown (fact
	// sheet §8 item 7); Moxa's driver never sends START_NOTIFY and
	// handles NOTIFY, so the default is to notify.
	NotifyGated bool

	// PollInterval, if non-zero, sends a POLLING keep-alive that often;
	// a session whose host has not answered the previous poll with ALIVE
	// within AliveTimeout (default: PollInterval) is closed, as the
	// NPort's "TCP alive check" does.
	PollInterval time.Duration
	AliveTimeout time.Duration

	// UnknownDisconnect ends the session on an unknown opcode; by default
	// the request gets no reply.
	UnknownDisconnect bool
}

// NPortLine is the line part of the simulator's state.
type NPortLine struct {
	Baud   uint32
	Mode   aspp.Mode
	DTR    bool
	RTS    bool
	HWFlow [2]bool
	IXON   bool
	IXOFF  bool
	XON    byte // XONXOFF characters (0x11/0x13 until set)
	XOFF   byte
}

// NPortState is what the simulated NPort was told, for tests to assert.
type NPortState struct {
	NPortLine
	Break    bool               // START_BREAK without STOP_BREAK since
	Breaks   int                // START_BREAK requests
	Flushes  []aspp.FlushTarget // FLUSH selectors, in order
	TxFIFO   byte               // last TX_FIFO value
	Notify   bool               // NOTIFY frames enabled
	TxPaused bool               // SETXOFF without SETXON since
	Sessions int                // sessions started (a command or data connection opening one)
	Alives   int                // ALIVE answers received
	Requests []string           // every request, "% x", in order, all sessions
	Unknown  int                // requests with an opcode the simulator does not know
}

// Fault changes how the simulator answers requests with one opcode.
type Fault struct {
	Drop       bool          // no reply
	Error      bool          // reply op 'E' 'R' instead of op 'O' 'K'
	Refuse     bool          // PORT_INIT: reply 2C 03 FF FF FF and keep the old settings
	Split      bool          // send the reply in two writes
	Disconnect bool          // close the session instead of answering
	Delay      time.Duration // wait this long before answering
}

// NPort is a simulated Moxa NPort serial port in TCP Server mode with its
// command port (fact sheet shared/notes/moxa-aspp.md §7): a data listener
// passing raw bytes to and from a socat pty, and a command listener that
// speaks the command-port protocol (package aspp), applies the line
// settings it receives to the pty's termios — so a test reads them back
// with ReadTTY or stty, as for ser2net — and records everything.
//
// The serial device on the other end of the line is the pty TTY: what a
// test writes there arrives on the data connection, and what the host
// sends comes out there. A Linux pty forces 8 data bits and no parity, so
// State has the data bits and parity the host asked for, and the termios
// shows speed, stop bits and flow flags.
//
// One session at a time: a session starts with a command or a data
// connection (accepted independently, in either order) and ends when
// either closes (the other is closed too); a second command or data
// connection ends the running session and starts a new one from the
// Default settings. Requests are
// handled strictly in order, several per read or one split over reads;
// each reply is one Write (two with Fault.Split).
type NPort struct {
	DataAddr string // 127.0.0.1:port of the data listener
	CmdAddr  string // 127.0.0.1:port of the command listener (refuses with NoCommandPort)
	TTY      string // the serial device's end of the line (test side)
	UART     string // the NPort's end, whose termios the simulator sets

	t    testing.TB
	opts NPortOptions
	pty  *os.File // UART, non-blocking through the runtime poller
	ln   []net.Listener
	wg   sync.WaitGroup

	mu      sync.Mutex // guards the fields below
	cond    sync.Cond  // TxPaused changed, session changed, closed
	st      NPortState
	modem   aspp.Modem
	faults  map[aspp.Opcode]Fault
	sess    *nportSession // the running session, nil between sessions
	pending []byte        // line output while no data connection is open (≤ 1 KiB, like an NPort's buffer)
	closed  bool
	pollID  byte
}

type nportSession struct {
	id      int
	cmd     net.Conn // nil: none yet, or no command port
	data    net.Conn
	wmu     sync.Mutex // one frame per Write on cmd
	done    chan struct{}
	end     sync.Once
	awaitID int           // POLLING id awaiting ALIVE, -1 when none; guarded by NPort.mu
	alive   chan struct{} // the awaited ALIVE came (cap 1)
}

// nportLineBuffer is how much line output the simulator keeps while no
// host is connected (an NPort has about 1 KiB per port).
const nportLineBuffer = 1 << 10

// StartNPort starts a simulated NPort port on a fresh socat pty pair. It
// is closed when the test ends.
func StartNPort(t testing.TB, opts NPortOptions) *NPort {
	t.Helper()
	pair := StartSocatPTY(t)
	pty, err := os.OpenFile(pair.A, os.O_RDWR|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("devicetest: nport: open %s: %v", pair.A, err)
	}
	n := &NPort{TTY: pair.B, UART: pair.A, t: t, opts: opts, pty: pty, modem: opts.Modem,
		faults: make(map[aspp.Opcode]Fault)}
	n.cond.L = &n.mu
	if n.opts.Default.Baud == 0 {
		n.opts.Default.Baud = 9600
	}
	if n.opts.Default.Mode == 0 {
		n.opts.Default.Mode = 0x03
	}
	if n.opts.Default.XON == 0 && n.opts.Default.XOFF == 0 {
		n.opts.Default.XON, n.opts.Default.XOFF = 0x11, 0x13
	}
	n.opts.Default.DTR, n.opts.Default.RTS = true, true
	if n.opts.AliveTimeout == 0 {
		n.opts.AliveTimeout = n.opts.PollInterval
	}
	n.st.NPortLine = n.opts.Default
	n.st.Notify = !opts.NotifyGated
	if err := n.applyTermios(n.st.NPortLine); err != nil {
		pty.Close()
		t.Fatalf("devicetest: nport: %v", err)
	}
	data, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pty.Close()
		t.Fatalf("devicetest: nport: %v", err)
	}
	n.ln = append(n.ln, data)
	n.DataAddr = data.Addr().String()
	if opts.NoCommandPort {
		n.CmdAddr = addrOf(FreePort(t))
	} else {
		cmd, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			data.Close()
			pty.Close()
			t.Fatalf("devicetest: nport: %v", err)
		}
		n.ln = append(n.ln, cmd)
		n.CmdAddr = cmd.Addr().String()
		n.wg.Go(func() { n.accept(cmd, true) })
	}
	n.wg.Go(func() { n.accept(data, false) })
	n.wg.Go(n.lineReader)
	t.Cleanup(n.Close)
	return n
}

// Close ends the session, closes the listeners and the pty, and waits for
// every goroutine. It is idempotent; StartNPort arranges for it to run at
// the end of the test.
func (n *NPort) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	s := n.sess
	n.cond.Broadcast()
	n.mu.Unlock()
	for _, l := range n.ln {
		l.Close()
	}
	if s != nil {
		n.endSession(s, "simulator closed")
	}
	n.pty.Close()
	n.wg.Wait()
}

// State returns a copy of what the simulator was told so far.
func (n *NPort) State() NPortState {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := n.st
	st.Flushes = append([]aspp.FlushTarget(nil), st.Flushes...)
	st.Requests = append([]string(nil), st.Requests...)
	return st
}

// Connected reports whether a session has a command and a data
// connection open.
func (n *NPort) Connected() (cmd, data bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sess == nil {
		return false, false
	}
	return n.sess.cmd != nil, n.sess.data != nil
}

// SetFault makes requests with opcode op misbehave as f says (the zero
// Fault restores normal answers).
func (n *NPort) SetFault(op aspp.Opcode, f Fault) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if f == (Fault{}) {
		delete(n.faults, op)
		return
	}
	n.faults[op] = f
}

// SetModem sets the modem inputs. When they changed and a session with
// notifications on is running, it sends NOTIFY 26 20 msr 00.
func (n *NPort) SetModem(m aspp.Modem) {
	n.mu.Lock()
	changed := m != n.modem
	n.modem = m
	n.mu.Unlock()
	if changed {
		n.notify(aspp.EventModemChange)
	}
}

// InjectEvents sends NOTIFY with line events (parity, framing, overrun,
// BREAK received) and the current modem byte, if a session with
// notifications on is running.
func (n *NPort) InjectEvents(e aspp.Events) { n.notify(e) }

func (n *NPort) notify(e aspp.Events) {
	n.mu.Lock()
	s, on, m := n.sess, n.st.Notify, n.modem
	n.mu.Unlock()
	if s == nil || s.cmd == nil || !on {
		return
	}
	_ = n.write(s, aspp.AppendNotify(nil, e, m.MSR()), false)
}

// SendPolling sends one POLLING keep-alive with id now; the answer is
// counted in State().Alives.
func (n *NPort) SendPolling(id byte) error {
	n.mu.Lock()
	s := n.sess
	if s != nil {
		s.awaitID = int(id)
	}
	n.mu.Unlock()
	if s == nil || s.cmd == nil {
		return errors.New("devicetest: nport: no command connection")
	}
	return n.write(s, aspp.AppendPolling(nil, id), false)
}

// DropSession closes the running session's connections, as an NPort that
// restarts or whose alive check fired.
func (n *NPort) DropSession() {
	n.mu.Lock()
	s := n.sess
	n.mu.Unlock()
	if s != nil {
		n.endSession(s, "dropped by the test")
	}
}

func (n *NPort) logf(format string, args ...any) {
	n.t.Helper()
	n.mu.Lock()
	closed := n.closed
	n.mu.Unlock()
	if !closed {
		n.t.Logf("devicetest: nport: "+format, args...)
	}
}

func (n *NPort) accept(l net.Listener, isCmd bool) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			c.Close()
			return
		}
		old := n.sess
		// The two listeners accept independently, in either order: a
		// connection joins the running session unless that already has
		// one of its kind.
		newSession := old == nil || (isCmd && old.cmd != nil) || (!isCmd && old.data != nil)
		n.mu.Unlock()
		if newSession && old != nil {
			n.endSession(old, "replaced by a new connection")
		}
		n.mu.Lock()
		s := n.sess
		if s == nil {
			n.st.Sessions++
			s = &nportSession{id: n.st.Sessions, done: make(chan struct{}), awaitID: -1, alive: make(chan struct{}, 1)}
			n.sess = s
			n.resetLocked()
		}
		if isCmd {
			s.cmd = c
		} else {
			s.data = c
		}
		pending := n.pending
		n.pending = nil
		n.cond.Broadcast()
		n.mu.Unlock()
		if isCmd {
			n.wg.Go(func() { n.command(s, c) })
			if n.opts.PollInterval > 0 {
				n.wg.Go(func() { n.poller(s) })
			}
		} else {
			if len(pending) > 0 {
				_, _ = c.Write(pending)
			}
			n.wg.Go(func() { n.dataReader(s, c) })
		}
	}
}

// resetLocked starts a session from the Default settings.
func (n *NPort) resetLocked() {
	n.st.NPortLine = n.opts.Default
	n.st.Break = false
	n.st.TxPaused = false
	n.st.Notify = !n.opts.NotifyGated
	if err := n.applyTermios(n.st.NPortLine); err != nil {
		n.t.Errorf("devicetest: nport: %v", err)
	}
}

func (n *NPort) endSession(s *nportSession, why string) {
	s.end.Do(func() {
		n.mu.Lock()
		if n.sess == s {
			n.sess = nil
		}
		cmd, data := s.cmd, s.data
		n.cond.Broadcast()
		n.mu.Unlock()
		close(s.done)
		if cmd != nil {
			cmd.Close()
		}
		if data != nil {
			data.Close()
		}
		n.logf("session %d ended: %s", s.id, why)
	})
}

// lineReader passes what the serial device sends to the data connection
// (or keeps up to 1 KiB while there is none).
func (n *NPort) lineReader() {
	buf := make([]byte, 4096)
	for {
		k, err := n.pty.Read(buf)
		if k > 0 {
			n.mu.Lock()
			var c net.Conn
			if n.sess != nil {
				c = n.sess.data
			}
			if c == nil {
				room := nportLineBuffer - len(n.pending)
				n.pending = append(n.pending, buf[:min(k, max(room, 0))]...)
			}
			n.mu.Unlock()
			if c != nil {
				_, _ = c.Write(buf[:k])
			}
		}
		if err != nil {
			return
		}
	}
}

// dataReader passes the host's data to the serial line, holding it while
// the host paused the transmitter (SETXOFF).
func (n *NPort) dataReader(s *nportSession, c net.Conn) {
	defer n.endSession(s, "data connection closed")
	buf := make([]byte, 4096)
	for {
		k, err := c.Read(buf)
		if k > 0 {
			n.mu.Lock()
			for n.st.TxPaused && n.sess == s && !n.closed {
				n.cond.Wait()
			}
			n.mu.Unlock()
			if _, werr := n.pty.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// poller sends POLLING every PollInterval and ends the session when the
// previous poll went unanswered for AliveTimeout.
func (n *NPort) poller(s *nportSession) {
	t := time.NewTicker(n.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		select { // a stale answer to a SendPolling of the test's
		case <-s.alive:
		default:
		}
		n.mu.Lock()
		n.pollID++
		id := n.pollID
		s.awaitID = int(id)
		n.mu.Unlock()
		if n.write(s, aspp.AppendPolling(nil, id), false) != nil {
			return
		}
		timer := time.NewTimer(n.opts.AliveTimeout)
		select {
		case <-s.done:
			timer.Stop()
			return
		case <-s.alive:
			timer.Stop()
		case <-timer.C:
			n.endSession(s, fmt.Sprintf("no ALIVE for POLLING %#02x within %v", id, n.opts.AliveTimeout))
			return
		}
	}
}

// write sends one frame on the session's command connection (in two
// writes when split).
func (n *NPort) write(s *nportSession, b []byte, split bool) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if split && len(b) > 1 {
		if _, err := s.cmd.Write(b[:1]); err != nil {
			return err
		}
		b = b[1:]
	}
	_, err := s.cmd.Write(b)
	return err
}

// command serves one command connection.
func (n *NPort) command(s *nportSession, c net.Conn) {
	defer n.endSession(s, "command connection closed")
	var dec aspp.RequestDecoder
	buf := make([]byte, 512)
	for {
		k, err := c.Read(buf)
		if k > 0 {
			if derr := dec.Decode(buf[:k], func(r aspp.Request) error { return n.handle(s, r) }); derr != nil {
				n.logf("session %d: %v", s.id, derr)
				return
			}
		}
		if err != nil {
			return
		}
	}
}

var errEndSession = errors.New("devicetest: nport: session ended by a fault")

// handle answers one request, in order.
func (n *NPort) handle(s *nportSession, r aspp.Request) error {
	n.mu.Lock()
	n.st.Requests = append(n.st.Requests, fmt.Sprintf("% x", r.AppendTo(nil)))
	f := n.faults[r.Op]
	n.mu.Unlock()
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-s.done:
			return errEndSession
		}
	}
	if f.Disconnect {
		return errEndSession
	}
	reply, err := n.apply(r, f)
	if err != nil {
		n.logf("session %d: %v: %v", s.id, r, err)
	}
	if reply == nil || f.Drop {
		if n.opts.UnknownDisconnect && aspp.ReplyLen(r.Op) == 0 && r.Op != aspp.Alive {
			return errEndSession
		}
		return nil
	}
	if f.Error && len(reply) == 3 {
		reply[1], reply[2] = 'E', 'R'
	}
	if werr := n.write(s, reply, f.Split); werr != nil {
		return errEndSession
	}
	return nil
}

// apply carries out r and returns the reply (nil: none).
func (n *NPort) apply(r aspp.Request, f Fault) ([]byte, error) {
	ok := aspp.AppendOK(nil, r.Op)
	n.mu.Lock()
	defer n.mu.Unlock()
	switch r.Op {
	case aspp.PortInit:
		p, err := r.Init()
		if err != nil {
			return nil, err // Moxa's daemon would not frame it either
		}
		if f.Refuse {
			return aspp.AppendRefused(nil), nil
		}
		line := n.st.NPortLine
		if b, known := p.Baud.Baud(); known {
			line.Baud = b
		} else if p.Baud != aspp.BaudByValue {
			return aspp.AppendRefused(nil), fmt.Errorf("baud index %d not in the table", p.Baud)
		}
		if !p.Mode.Valid() {
			return aspp.AppendRefused(nil), fmt.Errorf("mode byte %#02x", byte(p.Mode))
		}
		line.Mode, line.DTR, line.RTS, line.HWFlow, line.IXON, line.IXOFF = p.Mode, p.DTR, p.RTS, p.HWFlow, p.IXON, p.IXOFF
		if err := n.setLineLocked(line); err != nil {
			return aspp.AppendRefused(nil), err
		}
		return aspp.AppendModem(nil, aspp.PortInit, n.modem), nil
	case aspp.SetBaud:
		b, err := r.Baud()
		if err != nil || b == 0 {
			ok[1], ok[2] = 'E', 'R'
			return ok, err
		}
		line := n.st.NPortLine
		line.Baud = b
		if err := n.setLineLocked(line); err != nil {
			ok[1], ok[2] = 'E', 'R'
			return ok, err
		}
		return ok, nil
	case aspp.IOCTL:
		if len(r.Payload) != 2 {
			return nil, fmt.Errorf("IOCTL payload % x", r.Payload)
		}
		line := n.st.NPortLine
		if b, known := aspp.BaudIndex(r.Payload[0]).Baud(); known {
			line.Baud = b
		}
		line.Mode = aspp.Mode(r.Payload[1])
		if err := n.setLineLocked(line); err != nil {
			ok[1], ok[2] = 'E', 'R'
			return ok, err
		}
		return ok, nil
	case aspp.XonXoff:
		x, y, err := r.XonXoff()
		if err != nil {
			return nil, err
		}
		line := n.st.NPortLine
		line.XON, line.XOFF = x, y
		if err := n.setLineLocked(line); err != nil {
			ok[1], ok[2] = 'E', 'R'
			return ok, err
		}
		return ok, nil
	case aspp.LineCtrl:
		dtr, rts, err := r.LineCtrl()
		if err != nil {
			return nil, err
		}
		n.st.DTR, n.st.RTS = dtr, rts
		return ok, nil
	case aspp.StartBreak:
		n.st.Break = true
		n.st.Breaks++
		return ok, nil
	case aspp.StopBreak:
		n.st.Break = false
		return ok, nil
	case aspp.Flush:
		t, err := r.Flush()
		if err != nil {
			return nil, err
		}
		n.st.Flushes = append(n.st.Flushes, t)
		return ok, n.flushLocked(t)
	case aspp.TxFIFO:
		v, err := r.Byte()
		if err != nil {
			return nil, err
		}
		n.st.TxFIFO = v
		return ok, nil
	case aspp.SetXon, aspp.SetXoff:
		n.st.TxPaused = r.Op == aspp.SetXoff
		n.cond.Broadcast()
		return ok, nil
	case aspp.StartNotify, aspp.StopNotify:
		n.st.Notify = r.Op == aspp.StartNotify
		return ok, nil
	case aspp.FlowCtrl, aspp.Host:
		return ok, nil
	case aspp.LStatus:
		return aspp.AppendModem(nil, aspp.LStatus, n.modem), nil
	case aspp.WaitOQueue, aspp.OQueue, aspp.IQueue:
		return aspp.AppendQueue(nil, r.Op, 0), nil // the pty takes everything at once
	case aspp.Alive:
		id, err := r.Byte()
		if err != nil {
			return nil, err
		}
		n.st.Alives++
		if s := n.sess; s != nil && s.awaitID == int(id) {
			s.awaitID = -1
			select {
			case s.alive <- struct{}{}:
			default:
			}
		}
		return nil, nil
	}
	n.st.Unknown++
	return nil, fmt.Errorf("unknown request %v", r)
}

func (n *NPort) setLineLocked(line NPortLine) error {
	if err := n.applyTermios(line); err != nil {
		return err
	}
	n.st.NPortLine = line
	return nil
}

// applyTermios sets the UART end's termios: speed (BOTHER, so any rate),
// data bits, parity, stop bits, RTS/CTS and XON/XOFF flow and characters.
func (n *NPort) applyTermios(line NPortLine) error {
	var serr error
	err := n.control(func(fd int) {
		tio, err := unix.IoctlGetTermios(fd, unix.TCGETS2)
		if err != nil {
			serr = err
			return
		}
		tio.Cflag &^= unix.CBAUD | unix.CSIZE | unix.PARENB | unix.PARODD | unix.CMSPAR | unix.CSTOPB | unix.CRTSCTS
		// A standard rate as its B constant (stty, which reads the old
		// termios, shows it); any other through BOTHER.
		tio.Cflag |= termiosSpeed(line.Baud) | unix.CREAD | unix.CLOCAL
		tio.Ispeed, tio.Ospeed = line.Baud, line.Baud
		tio.Cflag |= [...]uint32{unix.CS5, unix.CS6, unix.CS7, unix.CS8}[line.Mode.DataBits()-5]
		switch line.Mode.Parity() {
		case aspp.ParityEven:
			tio.Cflag |= unix.PARENB
		case aspp.ParityOdd:
			tio.Cflag |= unix.PARENB | unix.PARODD
		case aspp.ParityMark:
			tio.Cflag |= unix.PARENB | unix.PARODD | unix.CMSPAR
		case aspp.ParitySpace:
			tio.Cflag |= unix.PARENB | unix.CMSPAR
		}
		if line.Mode.TwoStop() {
			tio.Cflag |= unix.CSTOPB
		}
		if line.HWFlow[0] || line.HWFlow[1] {
			tio.Cflag |= unix.CRTSCTS
		}
		tio.Iflag &^= unix.IXON | unix.IXOFF
		if line.IXON {
			tio.Iflag |= unix.IXON
		}
		if line.IXOFF {
			tio.Iflag |= unix.IXOFF
		}
		tio.Cc[unix.VSTART], tio.Cc[unix.VSTOP] = line.XON, line.XOFF
		serr = unix.IoctlSetTermios(fd, unix.TCSETS2, tio)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("devicetest: nport: set termios of %s: %w", n.UART, err)
	}
	return nil
}

// termiosSpeed returns the CBAUD value for baud: its B constant, or
// BOTHER (the speed fields then hold the rate).
func termiosSpeed(baud uint32) uint32 {
	switch baud {
	case 50:
		return unix.B50
	case 75:
		return unix.B75
	case 110:
		return unix.B110
	case 134:
		return unix.B134
	case 150:
		return unix.B150
	case 200:
		return unix.B200
	case 300:
		return unix.B300
	case 600:
		return unix.B600
	case 1200:
		return unix.B1200
	case 1800:
		return unix.B1800
	case 2400:
		return unix.B2400
	case 4800:
		return unix.B4800
	case 9600:
		return unix.B9600
	case 19200:
		return unix.B19200
	case 38400:
		return unix.B38400
	case 57600:
		return unix.B57600
	case 115200:
		return unix.B115200
	case 230400:
		return unix.B230400
	case 460800:
		return unix.B460800
	case 921600:
		return unix.B921600
	}
	return unix.BOTHER
}

func (n *NPort) flushLocked(t aspp.FlushTarget) error {
	sel := map[aspp.FlushTarget]int{aspp.FlushRX: unix.TCIFLUSH, aspp.FlushTX: unix.TCOFLUSH, aspp.FlushBoth: unix.TCIOFLUSH}[t]
	var ferr error
	err := n.control(func(fd int) { ferr = unix.IoctlSetInt(fd, unix.TCFLSH, sel) })
	if err == nil {
		err = ferr
	}
	return err
}

// control runs f on the pty's descriptor without taking it out of
// non-blocking mode (os.File.Fd would).
func (n *NPort) control(f func(fd int)) error {
	rc, err := n.pty.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { f(int(fd)) })
}

// Stty returns what `stty -a -F path` prints: the tty's termios as an
// operator sees it ("speed 57600 baud; …", "cstopb", "-crtscts"). The
// stty of Debian 12 (coreutils 9.1) reads the old termios, so a rate
// outside the B-constant table (250000) prints as "speed 0 baud": read it
// with ReadTTY.
func Stty(t testing.TB, path string) string {
	t.Helper()
	bin := Require(t, "stty")
	out, err := exec.Command(bin, "-a", "-F", path).CombinedOutput()
	if err != nil {
		t.Fatalf("devicetest: stty -a -F %s: %v: %s", path, err, out)
	}
	return string(out)
}

// SttyHas reports whether every word is in the stty output (whole words:
// "cstopb" does not match "-cstopb").
func SttyHas(out string, words ...string) bool {
	fields := strings.FieldsFunc(out, func(r rune) bool { return r == ' ' || r == ';' || r == '\n' })
	have := make(map[string]bool, len(fields))
	for _, f := range fields {
		have[f] = true
	}
	for _, w := range words {
		if !have[w] {
			return false
		}
	}
	return true
}
