// Package vspctest is a simulated ESXi host: it connects to a vSPC the way
// a real host does (byte sequences from VMware's capture, notes
// esxi-wire.md §4.1–4.3), answers identification queries, carries a VM's
// serial data and performs the vMotion hand-over over two connections.
// Tests, the simulate-vm command and the load tool use it.
package vspctest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vspc-bridge/vspc-bridge/telnet"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// VM describes the virtual machine and serial port a Host plays.
type VM struct {
	Name       string
	VCUUID     string // canonical 8-4-4-4-12; sent in ESXi's 47-byte spaced form
	BIOSUUID   string
	LocUUID    string
	Direction  vspc.Direction
	ServiceURI string
}

// knownSuboptions1 is the KNOWN-SUBOPTIONS-1 list real ESXi sends, in its (unsorted) order.
var knownSuboptions1 = []byte{0x00, 0x01, 0x02, 0x03, 0x28, 0x29, 0x2b, 0x2c, 0x2d, 0x2e, 0x30, 0x46, 0x47, 0x49, 0x50, 0x51, 0x54, 0x55, 0x56, 0x57, 0x52, 0x53}

// SpacedUUID renders a UUID the way ESXi sends VM-VC-UUID: 16 lowercase
// hex pairs separated by spaces, with '-' between the 8th and 9th.
func SpacedUUID(u string) string {
	h := strings.ReplaceAll(strings.ToLower(u), "-", "")
	if len(h) != 32 {
		return u
	}
	var b strings.Builder
	for i := 0; i < 16; i++ {
		if i > 0 {
			if i == 8 {
				b.WriteByte('-')
			} else {
				b.WriteByte(' ')
			}
		}
		b.WriteString(h[2*i : 2*i+2])
	}
	return b.String()
}

// Conn is one connection from the simulated host to the proxy.
type Conn struct {
	nc    net.Conn
	vm    VM
	opts  telnet.Options // owned by readLoop
	hello []byte

	pr *io.PipeReader // serial data from the proxy (to the "guest")
	pw *io.PipeWriter

	wmu sync.Mutex // serialises writes

	optsMu sync.Mutex // guards opts between readLoop and EnableComPort

	com    chan []byte // COM-PORT-OPTION subnegotiations from the proxy
	breaks atomic.Int64

	mu      sync.Mutex
	ext     chan vspc.Ext // extension messages from the proxy
	readErr error
	done    chan struct{}
}

// Options tune a simulated connection.
type Options struct {
	// SkipNegotiation leaves out the option dance (for negative tests).
	SkipNegotiation bool
}

func newConn(nc net.Conn, vm VM) *Conn {
	pr, pw := io.Pipe()
	c := &Conn{nc: nc, vm: vm, pr: pr, pw: pw, ext: make(chan vspc.Ext, 64), com: make(chan []byte, 64), done: make(chan struct{})}
	// What ESXi agrees to: BINARY and SGA both ways, ECHO from the proxy,
	// and the VMware extension.
	c.opts.Accept(telnet.Remote, telnet.Binary, true)
	c.opts.Accept(telnet.Remote, telnet.SuppressGA, true)
	c.opts.Accept(telnet.Remote, telnet.Echo, true)
	c.opts.Accept(telnet.Local, telnet.Binary, true)
	c.opts.Accept(telnet.Local, telnet.SuppressGA, true)
	c.opts.Accept(telnet.Local, telnet.VMwareExt, true)
	c.opts.Accept(telnet.Local, telnet.ComPort, true)
	// ESXi's first bytes: WILL AUTHENTICATION, then it offers WILL 232.
	// (Computed before the reader starts: opts belongs to it afterwards.)
	c.hello = telnet.AppendNegotiation(nil, telnet.WILL, telnet.Authentication)
	c.hello = c.opts.Enable(c.hello, telnet.Local, telnet.VMwareExt)
	go c.readLoop()
	return c
}

// Dial connects to the proxy at addr and performs the whole handshake of
// a VM serial port: WILL AUTHENTICATION, the option dance, WILL 232,
// KNOWN-SUBOPTIONS-1, DO-PROXY, identification answers. It returns once
// the proxy answered WILL-PROXY; WONT-PROXY gives ErrWontProxy.
func Dial(ctx context.Context, addr string, vm VM) (*Conn, error) {
	d := net.Dialer{KeepAlive: -1} // loopback tests need none
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := Handshake(ctx, nc, vm)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// ErrWontProxy is returned when the proxy refuses with WONT-PROXY.
var ErrWontProxy = errors.New("vspctest: proxy answered WONT-PROXY")

// Handshake performs the source-host handshake on an open connection.
func Handshake(ctx context.Context, nc net.Conn, vm VM) (*Conn, error) {
	c := newConn(nc, vm)
	// ESXi sends DO-PROXY "before any content is exchanged", in the same
	// segment as KNOWN-SUBOPTIONS-1 (capture at 3.86 ms): one write.
	if err := c.write(vspc.AppendExt(c.opening(), vspc.DoProxy, []byte{byte(vm.Direction)}, []byte(vm.ServiceURI))); err != nil {
		return nil, err
	}
	for {
		m, err := c.NextExt(ctx)
		if err != nil {
			return nil, fmt.Errorf("vspctest: waiting for WILL-PROXY: %w", err)
		}
		switch m.Cmd {
		case vspc.WillProxy:
			return c, nil
		case vspc.WontProxy:
			return nil, ErrWontProxy
		default:
			return nil, fmt.Errorf("vspctest: unexpected %v while waiting for WILL-PROXY", m.Cmd)
		}
	}
}

// DialPeer connects as the vMotion destination host: the same option
// dance, then VMOTION-PEER seq secret (no DO-PROXY), WILL COM-PORT-OPTION,
// and waits for VMOTION-PEER-OK.
func DialPeer(ctx context.Context, addr string, vm VM, seq, secret []byte) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return PeerHandshake(ctx, nc, vm, seq, secret)
}

// PeerHandshake performs the destination-host handshake on an open
// connection (see DialPeer); it closes nc on failure.
func PeerHandshake(ctx context.Context, nc net.Conn, vm VM, seq, secret []byte) (*Conn, error) {
	c := newConn(nc, vm)
	b := vspc.AppendExt(c.opening(), vspc.VMotionPeer, seq, secret)
	if err := c.write(telnet.AppendNegotiation(b, telnet.WILL, telnet.ComPort)); err != nil {
		nc.Close()
		return nil, err
	}
	m, err := c.NextExt(ctx)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("vspctest: waiting for VMOTION-PEER-OK: %w", err)
	}
	if m.Cmd != vspc.VMotionPeerOK || !bytes.Equal(m.Payload, seq) {
		nc.Close()
		return nil, fmt.Errorf("vspctest: got %v % x, want VMOTION-PEER-OK", m.Cmd, m.Payload)
	}
	return c, nil
}

// opening is ESXi's side of the option dance up to KNOWN-SUBOPTIONS-1,
// in a new slice the caller appends the next message to.
func (c *Conn) opening() []byte {
	b := make([]byte, 0, 128)
	b = append(b, c.hello...)
	return vspc.AppendExt(b, vspc.KnownSuboptions1, knownSuboptions1)
}

func (c *Conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

func (c *Conn) readLoop() {
	defer close(c.done)
	var dec telnet.Decoder
	// A small buffer until a read fills it: a thousand idle simulated
	// VMs should not cost the load tool 32 MiB of fresh pages.
	buf := make([]byte, 2<<10)
	for {
		n, err := c.nc.Read(buf)
		if n > 0 {
			var replies []byte
			flush := func() {
				if len(replies) > 0 {
					c.write(replies)
					replies = replies[:0]
				}
			}
			derr := dec.Decode(buf[:n], func(ev telnet.Event) error {
				switch ev.Kind {
				case telnet.EventData:
					flush() // a slow guest must not hold back our option answers
					if _, err := c.pw.Write(ev.Data); err != nil {
						return err
					}
				case telnet.EventCommand:
					if ev.Command == telnet.BRK {
						c.breaks.Add(1)
					}
				case telnet.EventNegotiation:
					var ch *telnet.Change
					c.optsMu.Lock()
					replies, ch = c.opts.Receive(replies, ev.Command, ev.Option)
					c.optsMu.Unlock()
					if ch != nil && ch.Option == telnet.Binary && ch.Side == telnet.Remote {
						dec.Binary = ch.Enabled
					}
				case telnet.EventSubnegotiation:
					if ev.Option == telnet.ComPort {
						select {
						case c.com <- append([]byte(nil), ev.Data...):
						default: // nobody listens: drop (notifications)
						}
						return nil
					}
					if ev.Option != telnet.VMwareExt {
						return nil
					}
					m, err := vspc.ParseExt(ev.Data)
					if err != nil {
						return err
					}
					m.Payload = append([]byte(nil), m.Payload...)
					if reply := c.answer(m); reply != nil {
						replies = append(replies, reply...)
						return nil
					}
					// Answer what came before m first, as ESXi does: a
					// caller acting on m (COMPLETE after PEER-OK) must
					// not overtake our DO BINARY on the wire.
					flush()
					c.ext <- m
				}
				return nil
			})
			if len(replies) > 0 {
				c.write(replies)
			}
			if derr != nil {
				err = derr
			}
			if n == len(buf) && len(buf) < 32<<10 {
				buf = make([]byte, 32<<10) // streaming: read in large chunks
			}
		}
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			c.pw.CloseWithError(err)
			close(c.ext)
			return
		}
	}
}

// answer replies to identification queries as ESXi does.
func (c *Conn) answer(m vspc.Ext) []byte {
	switch m.Cmd {
	case vspc.GetVMVCUUID:
		return vspc.AppendExt(nil, vspc.VMVCUUID, []byte(SpacedUUID(c.vm.VCUUID)))
	case vspc.GetVMName:
		return vspc.AppendExt(nil, vspc.VMName, []byte(c.vm.Name))
	case vspc.GetVMBIOSUUID:
		return vspc.AppendExt(nil, vspc.VMBIOSUUID, []byte(SpacedUUID(c.vm.BIOSUUID)))
	case vspc.GetVMLocationUUID:
		return vspc.AppendExt(nil, vspc.VMLocationUUID, []byte(SpacedUUID(c.vm.LocUUID)))
	case vspc.KnownSuboptions2:
		return []byte{} // noted, nothing to say
	}
	return nil
}

// NextExt returns the next extension message from the proxy that is not
// an identification query.
func (c *Conn) NextExt(ctx context.Context) (vspc.Ext, error) {
	select {
	case m, ok := <-c.ext:
		if !ok {
			c.mu.Lock()
			err := c.readErr
			c.mu.Unlock()
			return vspc.Ext{}, fmt.Errorf("connection closed: %w", err)
		}
		return m, nil
	case <-ctx.Done():
		return vspc.Ext{}, ctx.Err()
	}
}

// Read reads serial data the proxy sent to the VM.
func (c *Conn) Read(p []byte) (int, error) { return c.pr.Read(p) }

// Write sends serial data from the VM (IAC-escaped).
func (c *Conn) Write(p []byte) (int, error) {
	if err := c.write(telnet.AppendData(nil, p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the connection (a host going away).
func (c *Conn) Close() error {
	err := c.nc.Close()
	c.pr.Close()
	<-c.done
	return err
}

// LocalAddr is the connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// Begin sends VMOTION-BEGIN seq and waits for GOAHEAD (returning the
// secret) or NOTNOW (ErrNotNow).
func (c *Conn) Begin(ctx context.Context, seq []byte) ([]byte, error) {
	if err := c.write(vspc.AppendExt(nil, vspc.VMotionBegin, seq)); err != nil {
		return nil, err
	}
	m, err := c.NextExt(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case m.Cmd == vspc.VMotionGoahead && bytes.HasPrefix(m.Payload, seq):
		return m.Payload[len(seq):], nil
	case m.Cmd == vspc.VMotionNotNow && bytes.Equal(m.Payload, seq):
		return nil, ErrNotNow
	}
	return nil, fmt.Errorf("vspctest: got %v % x after BEGIN", m.Cmd, m.Payload)
}

// ErrNotNow is returned by Begin when the proxy answers VMOTION-NOTNOW.
var ErrNotNow = errors.New("vspctest: proxy answered VMOTION-NOTNOW")

// Complete sends VMOTION-COMPLETE seq (destination).
func (c *Conn) Complete(seq []byte) error {
	return c.write(vspc.AppendExt(nil, vspc.VMotionComplete, seq))
}

// Abort sends VMOTION-ABORT (source).
func (c *Conn) Abort() error { return c.write(vspc.AppendExt(nil, vspc.VMotionAbort)) }

// SendRaw writes raw bytes (for negative tests).
func (c *Conn) SendRaw(b []byte) error { return c.write(b) }

// Migrate performs a whole vMotion of the VM on c to a new connection
// from a "destination host", like ESXi: BEGIN, GOAHEAD, PEER on a new
// connection, PEER-OK, then the source closes and COMPLETE is sent at
// the same moment. It returns the destination connection.
func Migrate(ctx context.Context, c *Conn, addr string, seq []byte) (*Conn, error) {
	secret, err := c.Begin(ctx, seq)
	if err != nil {
		return nil, err
	}
	dst, err := DialPeer(ctx, addr, c.vm, seq, secret)
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.nc.Close() }()
	err = dst.Complete(seq)
	wg.Wait()
	if err != nil {
		dst.Close()
		return nil, err
	}
	return dst, nil
}

// Done is closed once the connection has ended: the proxy closed it, or
// Close did.
func (c *Conn) Done() <-chan struct{} { return c.done }

// WaitClosed waits until the proxy closes the connection or d passes.
func (c *Conn) WaitClosed(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	default:
	}
	if d <= 0 {
		return false
	}
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		return false
	}
}

// EnableComPort sends WILL COM-PORT-OPTION, as ESXi does once the proxy
// session is up.
func (c *Conn) EnableComPort() error {
	c.optsMu.Lock()
	out := c.opts.Enable(nil, telnet.Local, telnet.ComPort)
	c.optsMu.Unlock()
	return c.write(out)
}

// ComPort sends one COM-PORT-OPTION request (payload = code and value,
// unescaped) and returns the next COM-PORT-OPTION message from the proxy
// whose code is the request's +100.
func (c *Conn) ComPort(ctx context.Context, payload []byte) ([]byte, error) {
	if err := c.write(telnet.AppendSubnegotiation(nil, telnet.ComPort, payload)); err != nil {
		return nil, err
	}
	for {
		m, err := c.NextCom(ctx)
		if err != nil {
			return nil, err
		}
		if len(payload) > 0 && len(m) > 0 && m[0] == payload[0]+100 {
			return m, nil
		}
	}
}

// NextCom returns the next COM-PORT-OPTION message from the proxy.
func (c *Conn) NextCom(ctx context.Context) ([]byte, error) {
	select {
	case m := <-c.com:
		return m, nil
	case <-c.done:
		return nil, errors.New("vspctest: connection closed")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Breaks is the number of telnet BREAKs the proxy sent to the VM.
func (c *Conn) Breaks() int64 { return c.breaks.Load() }
