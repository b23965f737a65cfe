package devices

import (
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// Limits of the telnet kind.
const (
	// telnetMaxPendingReplies bounds the negotiation replies waiting for
	// the writer. A remote that keeps negotiating without reading our
	// answers is cut off rather than buffered without bound.
	telnetMaxPendingReplies = 4096
	// telnetWriteChunk bounds the escaped copy of one Write.
	telnetWriteChunk = 16 << 10
)

// telnetDevice is a telnet remote (KindTelnet). Every option the remote
// asks for is refused (the zero telnet.Options is the null object), so the
// connection stays in NVT mode: we send data with 255 doubled and a bare
// CR as CR NUL, and decode the remote's data the same way, so every byte
// value round-trips and none of the remote's protocol bytes reach Read.
//
// One writer goroutine owns the connection's write side: Write hands it
// the escaped data and waits; the reader (the Read caller) queues its
// negotiation replies for it, so a Write blocked by a slow remote never
// blocks Read.
type telnetDevice struct {
	streamConn
	fixedLine
	log *slog.Logger

	// Owned by the goroutine calling Read.
	dec  telnet.Decoder
	opts telnet.Options // zero value: refuse everything

	// Owned by the goroutine calling Write.
	wbuf []byte

	writes chan []byte    // Write → writer: escaped data
	wres   chan error     // writer → Write: result of the last data write
	notify chan struct{}  // reader → writer: pending has replies (cap 1)
	done   chan struct{}  // closed by Close
	wg     sync.WaitGroup // the writer goroutine
	once   sync.Once      // Close
	pendMu sync.Mutex     // guards pend
	pend   []byte         // guarded by pendMu: negotiation replies not yet sent
	werr   error          // owned by the writer: sticky write error
}

var _ Device = (*telnetDevice)(nil)

func newTelnet(conn net.Conn, t Target, configured rfc2217.Settings, log *slog.Logger) *telnetDevice {
	d := &telnetDevice{
		streamConn: streamConn{kind: t.Kind, addr: t.Addr(), conn: conn},
		fixedLine:  newFixedLine(t.Kind, t.Addr(), configured, log),
		log:        log,
		writes:     make(chan []byte),
		wres:       make(chan error, 1),
		notify:     make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	d.wg.Go(d.writer)
	return d
}

// writer is the only goroutine that writes to the connection. It exits
// when Close closes done.
func (d *telnetDevice) writer() {
	for {
		select {
		case <-d.done:
			return
		case <-d.notify:
			d.flushReplies()
		case b := <-d.writes:
			d.flushReplies() // replies go out in the order they were due
			if d.werr == nil {
				_, d.werr = d.conn.Write(b)
			}
			d.wres <- d.werr
		}
	}
}

func (d *telnetDevice) flushReplies() {
	d.pendMu.Lock()
	b := d.pend
	d.pend = nil
	d.pendMu.Unlock()
	if len(b) > 0 && d.werr == nil {
		_, d.werr = d.conn.Write(b)
	}
}

// queueReply hands a negotiation reply to the writer.
func (d *telnetDevice) queueReply(b []byte) error {
	d.pendMu.Lock()
	if len(d.pend)+len(b) > telnetMaxPendingReplies {
		d.pendMu.Unlock()
		return fmt.Errorf("devices: telnet %s: remote negotiates faster than it reads our replies (%d bytes pending)", d.streamConn.addr, telnetMaxPendingReplies)
	}
	d.pend = append(d.pend, b...)
	d.pendMu.Unlock()
	select {
	case d.notify <- struct{}{}:
	default: // the writer has been told already
	}
	return nil
}

// Read returns the remote's data with its telnet protocol removed. Bytes
// that were all protocol do not end a Read: it keeps reading until there
// is data or an error.
func (d *telnetDevice) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := d.conn.Read(p)
		w := 0
		if n > 0 {
			// Decoding never grows the data, so it is unescaped in place:
			// each data event aliases p at or after w.
			derr := d.dec.Decode(p[:n], func(ev telnet.Event) error {
				switch ev.Kind {
				case telnet.EventData:
					w += copy(p[w:], ev.Data)
				case telnet.EventNegotiation:
					var reply []byte
					reply, _ = d.opts.Receive(reply, ev.Command, ev.Option)
					d.log.Debug("devices: telnet negotiation", "verb", ev.Command, "option", ev.Option, "reply", fmt.Sprintf("% x", reply))
					if len(reply) > 0 {
						return d.queueReply(reply)
					}
				case telnet.EventSubnegotiation:
					d.log.Debug("devices: telnet subnegotiation ignored", "option", ev.Option, "len", len(ev.Data))
				case telnet.EventCommand:
					d.log.Debug("devices: telnet command ignored", "command", ev.Command)
				}
				return nil
			})
			if derr != nil {
				return w, fmt.Errorf("devices: telnet %s: %w", d.streamConn.addr, derr)
			}
		}
		if err != nil {
			return w, d.readErr(err)
		}
		if w > 0 {
			return w, nil
		}
	}
}

// Write sends p as NVT data (255 doubled, bare CR as CR NUL). It blocks
// until the data is written or the device is closed.
func (d *telnetDevice) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), telnetWriteChunk)]
		d.wbuf = telnet.AppendText(d.wbuf[:0], chunk)
		select {
		case d.writes <- d.wbuf:
		case <-d.done:
			return n, d.writeErr(net.ErrClosed)
		}
		if err := <-d.wres; err != nil {
			return n, d.writeErr(err)
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// Close closes the connection, stops the writer and waits for it. It is
// idempotent.
func (d *telnetDevice) Close() error {
	var err error
	d.once.Do(func() {
		_, err = d.close() // unblocks a write in progress
		close(d.done)
		d.wg.Wait()
	})
	return err
}
