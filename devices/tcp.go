package devices

import (
	"fmt"
	"net"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/internal/park"
)

// streamConn is the byte-stream half shared by the network kinds: a
// net.Conn whose errors name the device, with io.EOF for a peer that went
// away and ErrClosed after Close.
type streamConn struct {
	ident
	conn net.Conn
}

func (c *streamConn) readErr(err error) error  { return c.wrap("read", err) }
func (c *streamConn) writeErr(err error) error { return c.wrap("write", err) }

// close closes the conn once; it reports whether this call did it.
func (c *streamConn) close() (bool, error) {
	if !c.closed.CompareAndSwap(false, true) {
		return false, nil
	}
	if err := c.conn.Close(); err != nil {
		return true, fmt.Errorf("devices: %s %s: close: %w", c.kind, c.addr, err)
	}
	return true, nil
}

// tcpDevice is a raw TCP device (target.KindTCP, target.KindNPort): bytes
// pass through untouched; the line settings are fixed (see FixedLine).
type tcpDevice struct {
	streamConn
	*FixedLine
}

var _ Device = (*tcpDevice)(nil)

func newTCP(conn net.Conn, t target.Target, line *FixedLine) *tcpDevice {
	return &tcpDevice{
		streamConn: streamConn{ident: ident{kind: t.Kind, addr: t.Addr()}, conn: conn},
		FixedLine:  line,
	}
}

func (d *tcpDevice) Read(p []byte) (int, error) {
	n, err := d.conn.Read(p)
	return n, d.readErr(err)
}

func (d *tcpDevice) Write(p []byte) (int, error) {
	n, err := d.conn.Write(p)
	return n, d.writeErr(err)
}

// CanPark reports whether the device was opened with a Parker
// (Options.Parker).
func (d *tcpDevice) CanPark() bool {
	_, ok := d.conn.(*park.Conn)
	return ok
}

// SetReadDeadline sets the connection's read deadline: a Read that hits
// it returns an error matching os.ErrDeadlineExceeded.
func (d *tcpDevice) SetReadDeadline(t time.Time) error { return d.conn.SetReadDeadline(t) }

// Park parks the connection until it becomes readable, hangs up or is
// closed (then Options.Wake runs); call it on the reader's goroutine right
// after a Read that hit its deadline with no data, and stop reading on
// nil. Without Options.Parker it returns park.ErrNotParkable.
func (d *tcpDevice) Park() error {
	if pc, ok := d.conn.(*park.Conn); ok {
		return pc.Park()
	}
	return park.ErrNotParkable
}

// ParkNow parks the connection at once, with no Read before it (see
// park.Conn.ParkNow): for a device connection that has just opened, so
// that it never holds a goroutine until it has something to say. Without
// Options.Parker it returns park.ErrNotParkable.
func (d *tcpDevice) ParkNow() error {
	if pc, ok := d.conn.(*park.Conn); ok {
		return pc.ParkNow()
	}
	return park.ErrNotParkable
}

// Close closes the connection; it is idempotent.
func (d *tcpDevice) Close() error {
	_, err := d.close()
	return err
}
