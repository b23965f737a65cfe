package vspctest

import (
	"errors"
	"net"
	"time"

	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// Raw is a VM's telnet connection taken over from a Conn after the
// handshake (Detach): Write escapes IAC, Read returns the data only
// (commands, negotiation and subnegotiations are dropped). With no pipe
// and no reader goroutine it costs less per byte than Conn, so that load
// tests and benchmarks measure the proxy rather than the simulator.
type Raw struct {
	nc   net.Conn
	dec  telnet.Decoder
	buf  []byte
	out  []byte
	pend []byte
	wbuf []byte
}

// Detach stops c's reader (a read deadline in the past) and returns its
// connection as a Raw. Nothing may be in flight toward the VM: what c's
// reader had not delivered is lost.
func (c *Conn) Detach() (*Raw, error) {
	c.nc.SetReadDeadline(time.Unix(1, 0))
	if !c.WaitClosed(5 * time.Second) {
		return nil, errors.New("vspctest: reader did not stop")
	}
	c.nc.SetReadDeadline(time.Time{})
	r := &Raw{nc: c.nc}
	r.dec.Binary = true // the proxy sends WILL BINARY and ESXi agrees
	return r, nil
}

func (r *Raw) Read(p []byte) (int, error) {
	if r.buf == nil {
		r.buf = make([]byte, 64<<10)
	}
	for len(r.pend) == 0 {
		n, err := r.nc.Read(r.buf)
		if n > 0 {
			r.out = r.out[:0]
			if derr := r.dec.Decode(r.buf[:n], func(ev telnet.Event) error {
				if ev.Kind == telnet.EventData {
					r.out = append(r.out, ev.Data...)
				}
				return nil
			}); derr != nil {
				return 0, derr
			}
			r.pend = r.out
		}
		if err != nil && len(r.pend) == 0 {
			return 0, err
		}
	}
	n := copy(p, r.pend)
	r.pend = r.pend[n:]
	return n, nil
}

func (r *Raw) Write(p []byte) (int, error) {
	r.wbuf = telnet.AppendData(r.wbuf[:0], p)
	if _, err := r.nc.Write(r.wbuf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the connection.
func (r *Raw) Close() error { return r.nc.Close() }

// Conn is the underlying connection.
func (r *Raw) Conn() net.Conn { return r.nc }
