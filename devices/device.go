package devices

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/internal/park"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// Device is an open serial device: a byte stream plus RFC 2217 line
// control.
//
// Read returns io.EOF, or an error wrapping io.EOF or a cause, when the
// device has gone away (peer closed, tty hung up); after Close it returns
// an error wrapping ErrClosed. Close unblocks Read and Write and is
// idempotent. Read and Write may be called concurrently with each other
// and with the Port methods; two concurrent Reads (or Writes) are not
// supported.
//
// Port methods return an error wrapping rfc2217.ErrNotSupported for what
// the kind cannot do (see the kind's documentation in the package doc).
type Device interface {
	io.ReadWriteCloser
	rfc2217.Port
}

// ErrClosed is wrapped by errors from a Device that was closed by its
// owner. It also matches net.ErrClosed.
var ErrClosed = closedError{}

type closedError struct{}

func (closedError) Error() string        { return "devices: device closed" }
func (closedError) Is(target error) bool { return target == net.ErrClosed }

// Options configure Open.
type Options struct {
	// Initial are the line settings from the route configuration (zero
	// fields = unset). Non-zero fields override Target.Settings. For
	// serial and rfc2217 devices they are applied on Open; for tcp, nport
	// and telnet devices they are the expectation of what the far end is
	// configured to, and what SetSettings reports.
	Initial rfc2217.Settings

	// Line is what a tcp, nport or telnet device answers line control
	// with (see FixedLine); nil: a FixedLine of its own, configured to
	// Initial over the target's settings. Passing the same Line to every
	// Open of a device keeps one answer and one mismatch across
	// reconnects, and lets the caller answer with it while no device is
	// open. Other kinds ignore it.
	Line *FixedLine

	// Guest are the guest's line settings (zero fields = unset), applied
	// over Initial when the device opens, by the kinds that can change the
	// line: the bridge passes what the guest set before a reconnect. The
	// Device applies them beside the data (rfc2217, nport) or at once
	// (serial); Open never waits for a device server's answer to them.
	Guest rfc2217.Settings

	// CommandTimeout bounds the wait for an NPort's answer to one command
	// on its command port. Zero means DefaultNPortCommandTimeout.
	CommandTimeout time.Duration

	// Logger receives the device's log lines; nil discards them. Open
	// does not add the device to it: the caller narrows it (the bridge
	// uses .With("device", t.String())).
	Logger *slog.Logger

	// Dial opens network connections; nil uses a net.Dialer. The bridge
	// injects a policy-checking dialer here.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// DialTimeout bounds dialing and, for rfc2217 devices, the telnet
	// handshake. Zero means DefaultDialTimeout.
	DialTimeout time.Duration

	// Parker, when set, lets the data connection of a tcp device, or of
	// an nport device without a command port, park while idle (package
	// park): the Device then has CanPark() bool (true),
	// SetReadDeadline(time.Time) error, Park() error and ParkNow() error
	// (park at once, before any Read: a connection just opened), and Wake runs on
	// a fresh goroutine when a parked device becomes readable, hangs up or
	// is closed. Other kinds ignore it.
	Parker *park.Parker
	Wake   func()
}

// parkable wraps conn for parking when the caller gave a Parker.
func (o *Options) parkable(conn net.Conn) net.Conn {
	if o.Parker == nil {
		return conn
	}
	return o.Parker.Wrap(conn, o.Wake)
}

// DefaultDialTimeout is used when Options.DialTimeout is zero.
const DefaultDialTimeout = 10 * time.Second

func (o *Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Open opens the device t names. ctx bounds opening only (dialing,
// handshakes, applying the initial settings); it is not kept. Open fails
// fast with an error naming the device; retrying is the caller's business.
// The caller owns the returned Device and must Close it.
func Open(ctx context.Context, t target.Target, opts Options) (Device, error) {
	initial := opts.Initial.Merge(t.Settings)
	log := opts.logger()
	line := opts.Line
	if line == nil && t.Kind.FixedLine() {
		line = NewFixedLine(t, initial, log)
	}
	switch t.Kind {
	case target.KindNPort:
		if t.CmdPort != 0 {
			d, err := openNPort(ctx, t, nportOpen{cmdAddr: t.CmdAddr(), configured: initial, apply: opts.Guest,
				timeout: opts.CommandTimeout, line: line}, &opts, log)
			if err != nil {
				return nil, err
			}
			return d, nil
		}
		fallthrough // without a command port an NPort's data port is a tcp:// device
	case target.KindTCP:
		conn, err := dial(ctx, t, &opts)
		if err != nil {
			return nil, err
		}
		return newTCP(opts.parkable(conn), t, line), nil
	case target.KindTelnet:
		conn, err := dial(ctx, t, &opts)
		if err != nil {
			return nil, err
		}
		return newTelnet(conn, t, line, log, true), nil
	case target.KindRFC2217:
		return openRFC2217(ctx, t, opts.Guest.Merge(initial), &opts, log)
	case target.KindSerial:
		d, err := openSerial(ctx, t, initial, log)
		if err != nil || opts.Guest == (rfc2217.Settings{}) {
			return d, err
		}
		// A local tty takes them at once; one it refuses is no reason
		// to fail the open (the guest is told what is in effect).
		if _, err := d.SetSettings(ctx, opts.Guest); err != nil {
			log.Warn("devices: applying the guest's line settings", "settings", opts.Guest.String(), "err", err)
		}
		return d, nil
	}
	return nil, fmt.Errorf("devices: cannot open %q: unknown kind %v", t.Raw, t.Kind)
}

// dial dials t's address (dialAddr), saying which device failed.
func dial(ctx context.Context, t target.Target, opts *Options) (net.Conn, error) {
	conn, err := dialAddr(ctx, t.Addr(), opts)
	if err != nil {
		return nil, fmt.Errorf("devices: %s %s: %w", t.Kind, t.Addr(), err)
	}
	return conn, nil
}

// notSupported returns an error wrapping rfc2217.ErrNotSupported that says
// which device could not do what.
func notSupported(k target.Kind, addr, what string) error {
	return fmt.Errorf("devices: %s %s: %s: %w", k, addr, what, rfc2217.ErrNotSupported)
}

// ident names a device in its errors and knows whether its owner closed
// it: the error conventions every kind shares.
type ident struct {
	kind   target.Kind
	addr   string      // host:port, or the tty's path
	closed atomic.Bool // set by Close, before it closes anything
}

// wrap names the device in err, a failure of what ("read", "DTR", …):
// once the owner closed the device it is an error wrapping ErrClosed
// (whatever the I/O said about it); a read that met the peer's orderly
// end is io.EOF itself, and one that met its reset wraps io.EOF and
// ECONNRESET; anything else is "devices: KIND ADDR: what: err".
//
// A reset is the peer's end too: a peer that closes with our bytes unread
// resets the connection, and whether our Read then sees ECONNRESET or a
// plain end depends on whether a Write of ours took the error first (the
// kernel reports it once). Wrapping io.EOF gives both the same meaning.
func (id *ident) wrap(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case id.closed.Load():
		return fmt.Errorf("devices: %s %s: %w", id.kind, id.addr, ErrClosed)
	case what == "read" && errors.Is(err, io.EOF):
		return io.EOF
	case what == "read" && errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("devices: %s %s: read: %w (%w)", id.kind, id.addr, io.EOF, err)
	}
	return fmt.Errorf("devices: %s %s: %s: %w", id.kind, id.addr, what, err)
}
