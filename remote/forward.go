package remote

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/lazylog"
)

// Consoles across a cluster. Each member's hub serves the consoles of the
// VM serial ports that member holds. A user who logs in at any member's
// front door sees the consoles of every member in the menu (the others'
// from etcd, through Cluster), and reaches one another member serves over
// the member link: the front door opens a console stream to the owner,
// which attaches the user to its console as if the user had logged in
// there (the owner's [[user]] table decides the rights), and the front
// door relays input and output.
//
//	front door (member B)                           owner (member A)
//	login (B's [[user]]), menu: B's consoles + A's from etcd
//	pick A's console ── member link, mutual TLS ──► Header{kind "console", port, state: forwardRequest}
//	                                                 console, user and mode checked  ◄── Reply{ok | err}
//	input: 'i' data, 'b' BREAK, 'x' escape command ─► the session's attachLoop, as local
//	       'q' detach (the escape's "." is B's)
//	                  ◄── 'd' console output (B encodes it for its user), 'c' notices,
//	                      'r' refusals (SSH without a pty: stderr), 'e' end and why
//
// Frames are a type byte, a 32-bit big-endian length and the payload.
// Back-pressure: the owner's queue for the stream is a client queue like
// any other (client_queue, client_overflow, client_stall); the front door
// reads the next frame only while its own queue for the user has room, so
// a user who stops reading fills B's queue, then the stream's socket
// buffers (kept small), then A's queue, and the console pauses for at
// most client_stall before B (or A) drops that user. The escape sequence
// is read at the front door: its "." detaches there even from an owner
// that stopped answering; the other commands run at the owner.

// Cluster is the rest of a cluster as a front door sees it (package
// cluster, wired by the daemon): the consoles the other members serve,
// and a console stream to one of them.
type Cluster interface {
	// Consoles lists the VM serial ports other live members hold.
	Consoles(ctx context.Context) ([]ClusterConsole, error)
	// DialConsole opens a console stream to the member that serves c,
	// with state (a forward request) in its header; the owner answered
	// yes when it returns without error.
	DialConsole(ctx context.Context, c ClusterConsole, state []byte) (net.Conn, error)
}

// ClusterConsole is a VM serial port another member serves.
type ClusterConsole struct {
	Key                        string // ConsoleInfo.Key form: vspc.PortKey.String()
	VMName, VCUUID, ServiceURI string
	Direction                  string // "server", "client" or "" (unknown)
	Member                     string // the member that serves it
	Listen                     int    // its per-VM listener port on that member (port_range), 0 if none known
	Fence                      int64  // the owner's claim, as etcd had it
}

// WithCluster makes the front doors list and reach the consoles other
// members of a cluster serve.
func WithCluster(c Cluster) Option { return func(h *Hub) { h.cluster = c } }

// clusterConsoles lists the other members' consoles that would be
// remote-access consoles here: direction-server ports that no [[route]]
// joins to a device (every member has the same routes).
func (h *Hub) clusterConsoles(ctx context.Context) ([]ClusterConsole, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	all, err := h.cluster.Consoles(ctx)
	out := all[:0]
	for _, c := range all {
		if c.Direction == "client" {
			continue
		}
		if _, ok := h.cfg.MatchRoute(configs.RouteQuery{ServiceURI: c.ServiceURI, VMName: c.VMName, VCUUID: c.VCUUID}); ok {
			continue
		}
		out = append(out, c)
	}
	return out, err
}

// forwardRequest is the state of a console stream's header: who attaches
// at the front door, and how.
type forwardRequest struct {
	Key         string `json:"key"`
	User        string `json:"user,omitempty"`
	Open        bool   `json:"open,omitempty"` // an open front door (no login): the owner must be open too
	Mode        string `json:"mode,omitempty"` // rw, ro, x, xw; "" by the user's right
	Interactive bool   `json:"interactive,omitempty"`
	Via         string `json:"via"`  // the front door's kind: telnet, telnets, ssh
	Peer        string `json:"peer"` // the user's address
}

// Frame types of a console stream.
const (
	frameData    = 'd' // owner → door: console output
	frameControl = 'c' // owner → door: notices, banners
	frameRefuse  = 'r' // owner → door: a refusal (stderr without a pty)
	frameEnd     = 'e' // owner → door: the attachment ended; payload: why
	frameInput   = 'i' // door → owner: typed data
	frameBreak   = 'b' // door → owner: BREAK
	frameCommand = 'x' // door → owner: an escape command (one byte)
	frameDetach  = 'q' // door → owner: the user detached
)

// Why a forwarded attachment ended (frameEnd).
const (
	endDetached = "detached"
	endRefused  = "refused"
	endGone     = "gone"    // the console closed (the VM's port went away)
	endDropped  = "dropped" // the owner dropped the client (client_overflow = "drop")
	endClosing  = "closing" // the owner's hub is closing
	endEnded    = "ended"
)

// maxFrame bounds a frame's payload (the largest is a scrollback: at most
// half the largest client_queue is more than anyone should send at once).
const maxFrame = 64 << 20

func appendFrame(dst []byte, typ byte, p []byte) []byte {
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(p)))
	return append(dst, p...)
}

func dataFrame(dst, p []byte) []byte    { return appendFrame(dst, frameData, p) }
func controlFrame(dst, p []byte) []byte { return appendFrame(dst, frameControl, p) }
func refuseFrame(dst, p []byte) []byte  { return appendFrame(dst, frameRefuse, p) }

// readFrame reads one frame; the payload aliases *buf (valid until the
// next call).
func readFrame(r *bufio.Reader, buf *[]byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("remote: console stream frame of %d bytes exceeds %d", n, maxFrame)
	}
	if cap(*buf) < int(n) {
		*buf = make([]byte, n)
	}
	p := (*buf)[:n]
	if _, err := io.ReadFull(r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[0], p, nil
}

// errDetached: the user at the other member's front door detached.
var errDetached = errors.New("remote: detached at the front door")

// fwdIn is the input of a forwarded session on the owner: frames from the
// front door.
type fwdIn struct {
	r   *bufio.Reader
	buf []byte
}

func (f *fwdIn) readInput() (inputEvent, error) {
	for {
		typ, p, err := readFrame(f.r, &f.buf)
		if err != nil {
			return inputEvent{}, err
		}
		switch typ {
		case frameInput:
			if len(p) == 0 {
				continue
			}
			return inputEvent{data: append([]byte(nil), p...)}, nil
		case frameBreak:
			return inputEvent{brk: true}, nil
		case frameCommand:
			if len(p) != 1 || p[0] == 0 {
				return inputEvent{}, fmt.Errorf("remote: console stream: bad escape command frame of %d bytes", len(p))
			}
			return inputEvent{cmd: p[0]}, nil
		case frameDetach:
			return inputEvent{}, errDetached
		default:
			return inputEvent{}, fmt.Errorf("remote: console stream: unknown frame type %q from the front door", typ)
		}
	}
}

// ServeForwarded serves a console stream another member of the cluster
// opened (member from, proven by the member link's mutual TLS) for a user
// who logged in at its front door: state is the stream header's forward
// request. accept answers the stream: once, with nil (then conn carries
// frames) or with the refusal. The user is attached to the console as if
// logged in here, with the rights this bridge's [[user]] table gives that
// name, the lock modes and escape commands of any session, and the same
// client queue and pause/drop rule. ServeForwarded returns when the
// attachment has ended; it closes conn.
func (h *Hub) ServeForwarded(ctx context.Context, conn net.Conn, from string, state []byte, accept func(error) error) {
	defer conn.Close()
	refuse := func(err error) {
		accept(err)
		h.log.Info("remote: console stream from another member refused", "member", from, "err", err)
	}
	if !h.cfg.Remote.Enabled {
		refuse(ErrDisabled)
		return
	}
	var req forwardRequest
	if err := json.Unmarshal(state, &req); err != nil {
		refuse(fmt.Errorf("remote: console stream request: %w", err))
		return
	}
	c := h.consoleByKey(req.Key)
	if c == nil {
		refuse(fmt.Errorf("%w on member-link request for %q", ErrNoConsole, req.Key))
		return
	}
	var user *configs.User
	name := req.User
	if req.Open {
		if !h.cfg.Remote.Open {
			refuse(errors.New("remote: an open front door's user may not attach here ([remote] open is false on this member)"))
			return
		}
	} else if user = h.auth.user(name); user == nil {
		refuse(fmt.Errorf("%w: unknown user %q on this member (every member needs the same [[user]] tables)", ErrNoAccess, name))
		return
	}
	mode := req.Mode
	if mode != "" {
		if _, ok := ParseMode(mode); !ok {
			refuse(fmt.Errorf("remote: unknown mode %q", mode))
			return
		}
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		refuse(ErrClosed)
		return
	}
	h.wg.Add(1)
	h.mu.Unlock()
	defer h.wg.Done()
	if accept(nil) != nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopHub := context.AfterFunc(h.ctx, cancel)
	defer stopHub()
	// A session's only reader is its goroutine; what ends the attachment
	// from elsewhere (the queue ended: the console closed or the client was
	// dropped; the hub closing) ends its read.
	unblock := func() { conn.SetReadDeadline(time.Now()) }
	stopCtx := context.AfterFunc(ctx, unblock)
	defer stopCtx()
	out := h.newOutQueue(conn, func() { conn.Close() }, func(error) { unblock() })
	out.ctl = controlFrame
	out.whole = true // a drop must not cut a frame: the front door drops the user (its queue is the user's)
	via := req.Via + " via " + from
	s := &session{
		h: h, peer: req.Peer, ip: req.Peer, via: via,
		in: &fwdIn{r: bufio.NewReaderSize(conn, 4096)}, out: out, enc: dataFrame,
		interactive: req.Interactive, echo: func() bool { return false }, trusted: func() {},
		errOut: func(m string) { out.controlEnc(refuseFrame, []byte(m)) },
		user:   user, userName: name,
	}
	s.log = lazylog.With(h.log, "peer", req.Peer, "via", via, "user", name)
	var args []string
	if mode != "" {
		args = []string{mode}
	}
	err := s.attachChecked(ctx, c, args)
	var r refusal
	why := endEnded
	switch {
	case out.isDropped():
		why = endDropped
	case errors.As(err, &r) || errors.Is(err, ErrNoAccess):
		why = endRefused
	case err == nil:
		why = endDetached
	case c.isClosed():
		why = endGone
	case h.ctx.Err() != nil:
		why = endClosing
	}
	out.close("")
	if out.wait() == nil {
		conn.SetWriteDeadline(time.Now().Add(killGrace))
		conn.Write(appendFrame(nil, frameEnd, []byte(why)))
	}
	s.log.Debug("remote: forwarded session ended", "why", why, "err", err)
}

// isClosed reports whether the console has closed.
func (c *console) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// interrupter is an input source whose blocked read another goroutine
// can end (readInput then fails until clearInterrupt).
type interrupter interface {
	interrupt()
	clearInterrupt()
}

func (t *telnetIn) interrupt()      { t.nc.SetReadDeadline(time.Now()) }
func (t *telnetIn) clearInterrupt() { t.nc.SetReadDeadline(time.Time{}) }

// errInterrupted: readInput was interrupted.
var errInterrupted = errors.New("remote: input interrupted")

func (s *sshIn) interrupt() {
	select {
	case s.intr <- struct{}{}:
	default:
	}
}

func (s *sshIn) clearInterrupt() {
	select {
	case <-s.intr:
	default:
	}
}

// fwdAttach is a front door's side of a console stream: the relay of the
// owner's output into the user's queue (pump), with the user's queue's
// back-pressure, and how it ended.
type fwdAttach struct {
	s    *session
	rc   *ClusterConsole
	conn net.Conn
	room chan struct{} // the user's queue drained (or ended)
	quit chan struct{} // the session is done with the stream
	done chan struct{} // pump ended: why and err are set
	why  string        // frameEnd's payload; "" when the stream broke
	err  error
	drop bool // the user was dropped here (too slow)
}

func (f *fwdAttach) onRoom() {
	select {
	case f.room <- struct{}{}:
	default:
	}
}

// pump relays the owner's frames to the user until the stream ends, and
// then wakes the session's read.
func (f *fwdAttach) pump() {
	s := f.s
	defer func() {
		f.conn.Close()
		close(f.done)
		if ir, ok := s.in.(interrupter); ok {
			ir.interrupt()
		}
	}()
	pause := s.h.cfg.Remote.ClientOverflow != configs.OverflowDrop
	dropMsg := fmt.Sprintf("\r\n[vspc-bridge: you fell more than %s behind the console of %s; disconnecting]\r\n", s.h.cfg.Remote.ClientQueue, f.rc.VMName)
	br := bufio.NewReaderSize(f.conn, 32<<10)
	var buf []byte
	for {
		typ, p, err := readFrame(br, &buf)
		if err != nil {
			f.err = err
			return
		}
		switch typ {
		case frameData:
			if s.out.ended() {
				return
			}
			if !s.out.data(p, s.enc, dropMsg, pause) {
				f.dropped(0)
				return
			}
			if pause && !f.waitRoom() {
				return
			}
		case frameControl:
			s.out.control(p)
		case frameRefuse:
			s.refuse(string(p))
		case frameEnd:
			f.why = string(p)
			return
		default:
			f.err = fmt.Errorf("remote: console stream: unknown frame type %q from member %s", typ, f.rc.Member)
			return
		}
	}
}

// waitRoom waits while the user's queue is full: until it drains to half,
// it ends, the session is done with the stream, or the user has taken no
// output for client_stall (then the user is dropped, as a local client
// is). Meanwhile the stream is not read, so the owner's queue for it
// fills and pauses the console there.
func (f *fwdAttach) waitRoom() bool {
	s := f.s
	stall := s.h.cfg.Remote.ClientStall.Duration
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		since, full := s.out.fullSince()
		if !full {
			return !s.out.ended()
		}
		left := stall - s.h.now().Sub(since)
		if left <= 0 {
			s.out.drop(fmt.Sprintf("\r\n[vspc-bridge: you took no console output for %s while the console of %s waited for you; disconnecting]\r\n", stall, f.rc.VMName))
			f.dropped(stall)
			return false
		}
		if timer == nil {
			timer = time.NewTimer(left)
		} else {
			timer.Reset(left)
		}
		select {
		case <-f.room:
		case <-timer.C:
		case <-f.quit:
			return false
		}
	}
}

func (f *fwdAttach) dropped(stall time.Duration) {
	s := f.s
	f.drop = true
	s.h.dropped.Add(1)
	args := []any{"console", f.rc.VMName, "member", f.rc.Member, "client_queue", int64(s.h.cfg.Remote.ClientQueue)}
	if stall > 0 {
		args = append(args, "client_stall", stall.String())
	}
	s.log.Warn("remote client dropped: too slow", args...)
}

// errDroppedHere: the user fell behind a forwarded console and was
// dropped; the session ends.
var errDroppedHere = errors.New("remote: dropped: too slow")

// attachRemote attaches the session to a console another member serves,
// over the member link, until the user detaches (nil), the attachment
// ends there (nil: back to the menu; a refusal), or the user goes or is
// dropped (error).
func (s *session) attachRemote(ctx context.Context, rc *ClusterConsole, args []string) error {
	right, ok := s.rightTo(rc.VMName, rc.VCUUID)
	if !ok {
		s.log.Warn("remote access denied", "vm", rc.VMName, "vc_uuid", rc.VCUUID, "member", rc.Member)
		s.refuse(fmt.Sprintf("[vspc-bridge: %s has no access to the console of %s]\r\n", s.userName, rc.VMName))
		return ErrNoAccess
	}
	asked := ""
	if len(args) > 0 {
		asked = args[0]
	}
	if _, err := modeFor(right, asked); err != nil {
		s.refuse("[vspc-bridge: " + userText(err) + "]\r\n")
		return refusal{err}
	}
	state, err := json.Marshal(forwardRequest{Key: rc.Key, User: s.userName, Open: s.user == nil, Mode: asked,
		Interactive: s.interactive, Via: s.via, Peer: s.peer})
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := s.h.cluster.DialConsole(dctx, *rc, state)
	cancel()
	if err != nil {
		s.log.Warn("remote: cannot reach a console on another member", "vm", rc.VMName, "member", rc.Member, "err", err)
		s.refuse(fmt.Sprintf("[vspc-bridge: the console of %s on member %s cannot be reached: %s]\r\n", rc.VMName, rc.Member, userText(err)))
		return refusal{err}
	}
	s.log.Info("remote: attached to a console on another member", "vm", rc.VMName, "vc_uuid", rc.VCUUID, "member", rc.Member)
	f := &fwdAttach{s: s, rc: rc, conn: conn, room: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	s.out.setOnRoom(f.onRoom)
	var wg sync.WaitGroup
	wg.Go(f.pump)
	finish := func() {
		close(f.quit)
		conn.Close()
		wg.Wait()
		s.out.setOnRoom(nil)
		if ir, ok := s.in.(interrupter); ok {
			ir.clearInterrupt()
		}
	}
	var esc escaper
	if s.interactive {
		esc.seq = s.h.escape
	}
	var wbuf []byte
	send := func(typ byte, p []byte) error {
		wbuf = appendFrame(wbuf[:0], typ, p)
		_, err := conn.Write(wbuf)
		return err
	}
	for {
		data := s.pend
		s.pend = nil
		if len(data) == 0 {
			ev, err := s.in.readInput()
			select {
			case <-f.done:
				if err == nil && len(ev.data) > 0 {
					s.pend = ev.data // typed ahead: for the menu
				}
				finish()
				return s.remoteEnded(f)
			default:
			}
			if err != nil {
				finish()
				if s.out.isDropped() {
					return errDroppedHere
				}
				return err
			}
			if ev.brk {
				if err := send(frameBreak, nil); err != nil {
					<-f.done
					finish()
					return s.remoteEnded(f)
				}
			}
			data = ev.data
		}
		if s.skipLF && len(data) > 0 && (data[0] == '\n' || data[0] == 0) {
			data = data[1:]
		}
		s.skipLF = false
		var werr error
		detach := false
		esc.feed(data, func(d []byte) {
			if werr == nil && !detach {
				werr = send(frameInput, d)
			}
		}, func(cmd byte) bool {
			if cmd == cmdDetach {
				detach = true
				return false
			}
			werr = send(frameCommand, []byte{cmd})
			return werr == nil
		})
		if detach {
			send(frameDetach, nil)
			finish()
			s.notice(fmt.Sprintf("\r\n[vspc-bridge: detached from %s]\r\n", rc.VMName))
			return nil
		}
		if werr != nil {
			<-f.done // the stream broke: the pump sees it too
			finish()
			return s.remoteEnded(f)
		}
	}
}

// remoteEnded tells the user how a forwarded attachment ended and what
// the session does next.
func (s *session) remoteEnded(f *fwdAttach) error {
	rc := f.rc
	switch {
	case f.drop || s.out.isDropped():
		return errDroppedHere
	case f.why == endRefused:
		return refusal{fmt.Errorf("remote: member %s refused the attachment to %s", rc.Member, rc.VMName)}
	case f.why == endDropped:
		// The owner dropped the user (client_overflow = "drop", or
		// client_stall); its words came last in the output, queued here.
		// As a local client, the user is disconnected once they are
		// written (or killGrace has passed).
		s.out.close("")
		return errDroppedHere
	case f.why == endDetached || f.why == endGone || f.why == endEnded:
		s.log.Info("remote: console on another member ended", "vm", rc.VMName, "member", rc.Member, "why", f.why)
		return nil
	case f.why == endClosing:
		s.notice(fmt.Sprintf("\r\n[vspc-bridge: member %s closed the console of %s (it is shutting down)]\r\n", rc.Member, rc.VMName))
		return nil
	}
	why := "the stream ended"
	if f.err != nil && !errors.Is(f.err, net.ErrClosed) && !errors.Is(f.err, os.ErrDeadlineExceeded) {
		why = userText(f.err)
	}
	s.log.Warn("remote: lost a console on another member", "vm", rc.VMName, "member", rc.Member, "err", f.err)
	s.notice(fmt.Sprintf("\r\n[vspc-bridge: lost the console of %s on member %s (%s)]\r\n", rc.VMName, rc.Member, why))
	if !s.interactive {
		s.refuse("vspc-bridge: lost the console of " + rc.VMName + " on member " + rc.Member + " (" + why + ")\r\n")
		return fmt.Errorf("remote: lost the console of %s on member %s: %w", rc.VMName, rc.Member, f.err)
	}
	return nil
}

// listenString renders a console's per-VM listener for the menu.
func (rc *ClusterConsole) listenString() string {
	if rc.Listen == 0 {
		return "-"
	}
	return rc.Member + ":" + strconv.Itoa(rc.Listen)
}
