package devices

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
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
	// telnetBinaryWait bounds how long a Write holding a CR waits for the
	// remote to answer our WILL BINARY (a CR is sent as CR NUL in NVT and
	// as CR alone in BINARY, so its encoding depends on the answer). Data
	// without CR never waits.
	telnetBinaryWait = 2 * time.Second
)

// telnetDevice is a telnet remote (target.KindTelnet), 8-bit clean where the
// remote agrees: at connect we offer and ask for BINARY both ways (RFC
// 856) and SUPPRESS-GO-AHEAD both ways (RFC 858), accept the remote's own
// requests for them, and refuse every other option (RFC 1143; the zero
// telnet.Options is the null object). Each direction follows its own
// BINARY state: we send data with 255 doubled, and in NVT (our BINARY
// off) a bare CR as CR NUL; we decode the remote's data the same way, so
// every byte value round-trips in either mode and none of the remote's
// protocol bytes reach Read.
//
// One writer goroutine owns the connection's write side: Write hands it
// the escaped data and waits; the reader (the Read caller) queues its
// negotiation replies for it, so a Write blocked by a slow remote never
// blocks Read.
type telnetDevice struct {
	streamConn
	*FixedLine
	log *slog.Logger

	// Owned by the goroutine calling Read.
	dec  telnet.Decoder
	opts telnet.Options // what we offer and accept; everything else refused

	// Owned by the goroutine calling Write.
	wbuf []byte

	sendBinary atomic.Bool   // our BINARY is on: data goes out with only 255 doubled
	recvBinary atomic.Bool   // the remote's BINARY is on (mirrors dec.Binary, for status)
	settled    chan struct{} // closed once our BINARY offer is answered (either way)
	settleOnce sync.Once

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

// newTelnet starts the telnet session on conn. With binary false it offers
// nothing and refuses everything (NVT only): tests use it to play a
// client whose remote refuses BINARY.
func newTelnet(conn net.Conn, t target.Target, line *FixedLine, log *slog.Logger, binary bool) *telnetDevice {
	d := &telnetDevice{
		streamConn: streamConn{ident: ident{kind: t.Kind, addr: t.Addr()}, conn: conn},
		FixedLine:  line,
		log:        log,
		settled:    make(chan struct{}),
		writes:     make(chan []byte),
		wres:       make(chan error, 1),
		notify:     make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	if binary {
		// Our offers go out before any data: the writer sends pending
		// replies first.
		d.pend = d.opts.Enable(d.pend, telnet.Local, telnet.Binary)
		d.pend = d.opts.Enable(d.pend, telnet.Remote, telnet.Binary)
		d.pend = d.opts.Enable(d.pend, telnet.Local, telnet.SuppressGA)
		d.pend = d.opts.Enable(d.pend, telnet.Remote, telnet.SuppressGA)
		d.notify <- struct{}{}
	} else {
		d.settle()
	}
	d.wg.Go(d.writer)
	return d
}

// settle marks our BINARY offer as answered.
func (d *telnetDevice) settle() { d.settleOnce.Do(func() { close(d.settled) }) }

// Binary reports which directions are in BINARY mode: in is the remote's
// data to us, out ours to the remote. False means NVT.
func (d *telnetDevice) Binary() (in, out bool) { return d.recvBinary.Load(), d.sendBinary.Load() }

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
					var ch *telnet.Change
					reply, ch = d.opts.Receive(reply, ev.Command, ev.Option)
					d.log.Debug("devices: telnet negotiation", "verb", ev.Command, "option", ev.Option, "reply", fmt.Sprintf("% x", reply))
					if ch != nil && ch.Option == telnet.Binary {
						d.binaryChanged(ch)
					}
					if !d.opts.Pending(telnet.Local, telnet.Binary) {
						d.settle()
					}
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

// binaryChanged follows a BINARY change in one direction. It runs on the
// reader goroutine, inside Decode: the decoder takes the new mode from the
// next byte on, which is where the remote switched.
func (d *telnetDevice) binaryChanged(ch *telnet.Change) {
	dir := "out"
	if ch.Side == telnet.Remote {
		dir = "in"
		d.dec.Binary = ch.Enabled
		d.recvBinary.Store(ch.Enabled)
	} else {
		d.sendBinary.Store(ch.Enabled)
	}
	d.log.Debug("devices: telnet BINARY", "direction", dir, "on", ch.Enabled)
}

// Write sends p with 255 doubled, and, while our BINARY is off (NVT), a
// bare CR as CR NUL. It blocks until the data is written or the device is
// closed. A chunk holding a CR written before the remote answered our
// WILL BINARY waits for that answer (at most telnetBinaryWait), so that
// its encoding matches what the remote expects; other data never waits.
func (d *telnetDevice) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), telnetWriteChunk)]
		if bytes.IndexByte(chunk, '\r') >= 0 {
			if err := d.awaitBinaryAnswer(); err != nil {
				return n, err
			}
		}
		if d.sendBinary.Load() {
			d.wbuf = telnet.AppendData(d.wbuf[:0], chunk)
		} else {
			d.wbuf = telnet.AppendText(d.wbuf[:0], chunk)
		}
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

// awaitBinaryAnswer waits until the remote answered our WILL BINARY, the
// device is closed, or telnetBinaryWait passed (then the data goes as NVT,
// which is right for a remote that ignores options).
func (d *telnetDevice) awaitBinaryAnswer() error {
	select {
	case <-d.settled:
		return nil
	default:
	}
	t := time.NewTimer(telnetBinaryWait)
	defer t.Stop()
	select {
	case <-d.settled:
	case <-d.done:
		return d.writeErr(net.ErrClosed)
	case <-t.C:
		// Once is enough: later data goes as NVT at once (and as
		// BINARY if the remote agrees after all).
		d.settle()
		d.log.Warn("devices: telnet remote has not answered WILL BINARY; sending NVT text", "waited", telnetBinaryWait)
	}
	return nil
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
