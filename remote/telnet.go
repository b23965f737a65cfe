package remote

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
	"time"

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

// serveTelnet runs one telnet (or raw tcp, or telnets) connection: the
// front door when con is nil, else the per-VM port of con.
// loggedIn is called once the user has logged in (or needs no login).
func (h *Hub) serveTelnet(ctx context.Context, nc net.Conn, raw bool, con *console, loggedIn func()) {
	via := "telnet"
	if raw {
		via = "tcp"
	}
	if _, ok := nc.(*tls.Conn); ok {
		via = "telnets"
	}
	// The writer's end (dropped, console gone, write failed) closes the
	// connection, which ends the session's read.
	out := h.newOutQueue(nc, func() { nc.Close() }, func(error) { nc.Close() })
	t := &telnetIn{nc: nc, out: out, raw: raw, buf: make([]byte, minReadBuf)}
	peer := nc.RemoteAddr().String()
	s := &session{
		h: h, log: h.log.With("peer", peer, "via", via), peer: peer, ip: hostOf(nc.RemoteAddr()), via: via,
		in: t, out: out, enc: t.encode, interactive: !raw,
		echo:    func() bool { return !raw && t.opts.Enabled(telnet.Local, telnet.Echo) }, // read on this goroutine only
		trusted: func() { nc.SetReadDeadline(time.Time{}); loggedIn() },
	}
	if con != nil {
		s.log = s.log.With("vm", con.req.VMName)
	}
	stop := context.AfterFunc(ctx, func() { out.close("\r\n[vspc-bridge: closing]\r\n") })
	if !raw {
		out.control(t.greeting())
	}
	nc.SetReadDeadline(time.Now().Add(h.cfg.Remote.LoginTimeout.Duration))
	err := s.run(ctx, con)
	stop()
	out.close("")
	out.wait()
	nc.Close()
	s.log.Debug("remote session ended", "err", err)
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
