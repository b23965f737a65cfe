package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/lazylog"
	"github.com/vspc-bridge/vspc-bridge/internal/park"
	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// telnetIn reads a remote user's telnet connection: it decodes the
// stream, answers option negotiation (through the connection's output
// queue, never writing itself), and turns IAC BRK into BREAK. With raw
// set (tcp:// listeners) every byte is data.
type telnetIn struct {
	nc     net.Conn
	out    *outQueue
	raw    bool
	dec    telnet.Decoder
	opts   telnet.Options
	binOut atomic.Bool // the user accepted our WILL BINARY: send 8-bit data, not NVT text
	buf    []byte
	evs    []inputEvent
	idle   *park.Idle // non-nil once attached on a parkable connection
}

// A client's read buffer starts small (an idle client should hold little)
// and grows once a read fills it.
const (
	minReadBuf = 128
	maxReadBuf = 4096
)

// greeting is what we ask for at connect: we echo and suppress go-ahead
// (character mode), BINARY both ways.
func (t *telnetIn) greeting() []byte {
	var b []byte
	b = t.opts.Enable(b, telnet.Local, telnet.Echo)
	b = t.opts.Enable(b, telnet.Local, telnet.SuppressGA)
	b = t.opts.Enable(b, telnet.Remote, telnet.SuppressGA)
	b = t.opts.Enable(b, telnet.Local, telnet.Binary)
	b = t.opts.Enable(b, telnet.Remote, telnet.Binary)
	return b
}

// encode turns console output into telnet data for this user.
func (t *telnetIn) encode(dst, p []byte) []byte {
	if t.raw {
		return append(dst, p...)
	}
	if t.binOut.Load() {
		return telnet.AppendData(dst, p)
	}
	return telnet.AppendText(dst, p)
}

func (t *telnetIn) addData(p []byte) {
	if n := len(t.evs); n > 0 && !t.evs[n-1].brk {
		t.evs[n-1].data = append(t.evs[n-1].data, p...)
		return
	}
	t.evs = append(t.evs, inputEvent{data: append([]byte(nil), p...)})
}

func (t *telnetIn) readInput() (inputEvent, error) {
	for len(t.evs) == 0 {
		n, err := t.nc.Read(t.buf)
		if n > 0 && t.idle != nil {
			t.idle.Seen()
		}
		if n == 0 && t.idle != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			if t.idle.Expired() {
				// Idle for a whole period: the caller may park; if it
				// does not, it starts a new period.
				return inputEvent{}, errIdle
			}
			t.nc.SetReadDeadline(t.idle.Start(time.Now()))
			continue
		}
		if n > 0 {
			in := t.buf[:n]
			if n == len(t.buf) && n < maxReadBuf {
				t.buf = make([]byte, maxReadBuf) // typing is small; a paste is not (in keeps the old one)
			}
			if t.raw {
				return inputEvent{data: append([]byte(nil), in...)}, nil
			}
			var replies []byte
			derr := t.dec.Decode(in, func(ev telnet.Event) error {
				switch ev.Kind {
				case telnet.EventData:
					t.addData(ev.Data)
				case telnet.EventCommand:
					switch ev.Command {
					case telnet.BRK:
						t.evs = append(t.evs, inputEvent{brk: true})
					case telnet.IP:
						t.addData([]byte{0x03}) // interrupt: the VM's Ctrl-C
					case telnet.EC:
						t.addData([]byte{0x7f})
					case telnet.EL:
						t.addData([]byte{0x15})
					case telnet.AYT:
						replies = append(replies, "\r\n[vspc-bridge: yes]\r\n"...)
					}
				case telnet.EventNegotiation:
					var ch *telnet.Change
					replies, ch = t.opts.Receive(replies, ev.Command, ev.Option)
					if ch != nil && ch.Option == telnet.Binary {
						if ch.Side == telnet.Remote {
							t.dec.Binary = ch.Enabled
						} else {
							t.binOut.Store(ch.Enabled)
						}
					}
				}
				return nil
			})
			t.out.control(replies)
			if derr != nil {
				return inputEvent{}, fmt.Errorf("remote: telnet: %w", derr)
			}
		}
		if err != nil && len(t.evs) == 0 {
			return inputEvent{}, err
		}
	}
	ev := t.evs[0]
	t.evs = t.evs[1:]
	return ev, nil
}

// parkIdle is how long an attached per-VM client's connection must be
// idle (no input) before it is parked: between parkIdle and twice it.
const parkIdle = 5 * time.Second

// firstPark is the first idle period of a client just attached, and the
// idle period of a per-VM listener.
const firstPark = 200 * time.Millisecond

// telnetConn is one telnet (or raw tcp, or telnets) connection: its
// session and what ending it takes. A per-VM port's connection parks
// while its attached user types nothing (park.Conn); the session then
// goes on in resume, on a fresh goroutine.
type telnetConn struct {
	h    *Hub
	ctx  context.Context
	nc   net.Conn   // pc when parkable
	pc   *park.Conn // nil: never parks
	s    *session
	t    *telnetIn
	out  *outQueue
	stop func() bool // stops the closing notice on ctx
	done func()      // releases the connection's session tokens
}

// serveTelnet runs one telnet (or raw tcp, or telnets) connection: the
// front door when con is nil, else the per-VM port of con. loggedIn is
// called once the user has logged in (or needs no login); done once the
// connection has ended. When the connection parks, serveTelnet returns
// before it has ended, counting the rest in h.wg.
func (h *Hub) serveTelnet(ctx context.Context, nc net.Conn, raw bool, con *console, loggedIn, done func()) {
	via := "telnet"
	if raw {
		via = "tcp"
	}
	if _, ok := nc.(*tls.Conn); ok {
		via = "telnets"
	}
	tc := &telnetConn{h: h, ctx: ctx, nc: nc, done: done}
	if con != nil && h.park != nil {
		tc.pc = h.park.Wrap(nc, tc.resume)
		tc.nc = tc.pc
	}
	nc = tc.nc
	// The writer's end (dropped, console gone, write failed) closes the
	// connection, which ends the session's read (or wakes it, parked).
	out := h.newOutQueue(nc, func() { nc.Close() }, func(error) { nc.Close() })
	t := &telnetIn{nc: nc, out: out, raw: raw, buf: make([]byte, minReadBuf)}
	peer := nc.RemoteAddr().String()
	s := &session{
		h: h, peer: peer, ip: hostOf(nc.RemoteAddr()), via: via,
		in: t, out: out, enc: t.encode, interactive: !raw,
		echo:    func() bool { return !raw && t.opts.Enabled(telnet.Local, telnet.Echo) }, // read on this goroutine only
		trusted: func() { nc.SetReadDeadline(time.Time{}); loggedIn() },
	}
	tc.s, tc.t, tc.out = s, t, out
	// Rendered only when something is logged: thousands of idle sessions
	// hold no formatted attributes.
	if con != nil {
		s.log = lazylog.With(h.log, "peer", peer, "via", via, "vm", con.req.VMName)
	} else {
		s.log = lazylog.With(h.log, "peer", peer, "via", via)
	}
	if tc.pc != nil {
		s.idle = func() {
			if t.idle == nil {
				// Just attached: a console logger never types, so park
				// it soon, before thousands of them attaching at once all
				// hold a goroutine. Later periods are parkIdle long.
				t.idle = &park.Idle{Period: min(firstPark, h.parkIdle)}
			} else {
				t.idle.Period = h.parkIdle
			}
			nc.SetReadDeadline(t.idle.Start(time.Now()))
		}
		s.park = func() bool {
			// Counted before parking: the wake-up may end the session
			// (h.wg.Done) before this goroutine has returned.
			h.wg.Add(1)
			h.parked.Add(1)
			if tc.pc.Park() == nil {
				return true
			}
			h.parked.Add(-1)
			h.wg.Done()
			return false
		}
	}
	tc.stop = context.AfterFunc(ctx, func() { out.close("\r\n[vspc-bridge: closing]\r\n") })
	if !raw {
		out.control(t.greeting())
	}
	nc.SetReadDeadline(time.Now().Add(h.cfg.Remote.LoginTimeout.Duration))
	err := s.run(ctx, con)
	if errors.Is(err, errParked) {
		return // resume goes on; s.park counted it in h.wg
	}
	tc.end(err)
}

// resume goes on with a parked session's read loop: data arrived, or the
// connection was closed (then the read fails and the session ends).
func (tc *telnetConn) resume() {
	tc.h.parked.Add(-1)
	tc.s.idle() // a new idle period (the old deadline has passed)
	err := tc.s.attachLoop(tc.ctx, tc.s.att)
	defer tc.h.wg.Done() // the count s.park took; parking again took a new one
	if errors.Is(err, errParked) {
		return
	}
	tc.s.att = nil
	tc.end(err)
}

// end finishes the connection: the last output, close, tokens.
func (tc *telnetConn) end(err error) {
	tc.stop()
	tc.out.close("")
	tc.out.wait()
	tc.nc.Close()
	tc.done()
	tc.s.log.Debug("remote session ended", "err", err)
}

// run is a telnet or tcp session after connect.
func (s *session) run(ctx context.Context, con *console) error {
	open := s.h.cfg.Remote.Open
	switch {
	case !s.interactive && open:
		// An open tcp:// port is a clean byte stream: no banner.
	case con != nil:
		s.print(fmt.Sprintf("vspc-bridge: console of %s (%s)\r\n", con.req.VMName, con.req.VCUUID))
	default:
		s.print("vspc-bridge console server\r\n")
	}
	if open {
		s.userName = "open@" + s.ip
	} else if err := s.login(ctx); err != nil {
		return err
	}
	s.trusted()
	if con == nil {
		return s.frontDoor(ctx)
	}
	return s.attachChecked(ctx, con, nil)
}
