package devices

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// rfc2217Device is an RFC 2217 access server (target.KindRFC2217): an
// rfc2217.Client on a dialed connection. Settings, DTR/RTS/BREAK and purge
// are forwarded live; ModemState is the server's last NOTIFY-MODEMSTATE
// (ErrNotSupported from a server that never sends one). The Client never
// blocks data on an acknowledgement and waits at most its AckTimeout for
// one, so Port calls are bounded.
type rfc2217Device struct {
	ident
	c *rfc2217.Client
}

var _ Device = (*rfc2217Device)(nil)

func openRFC2217(ctx context.Context, t target.Target, initial rfc2217.Settings, opts *Options, log *slog.Logger) (Device, error) {
	conn, err := dial(ctx, t, opts)
	if err != nil {
		return nil, err
	}
	timeout := opts.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	// Data never waits for control: the negotiation and the initial
	// settings go on beside the data (the Client logs a server that
	// refuses COM-PORT-OPTION, and missing acknowledgements).
	c, err := rfc2217.NewClient(ctx, conn, rfc2217.ClientOptions{
		Logger:           log,
		Initial:          initial,
		HandshakeTimeout: min(timeout, rfc2217.DefaultHandshakeTimeout),
		Background:       true,
	})
	if err != nil { // NewClient closed conn
		return nil, fmt.Errorf("devices: rfc2217 %s: %w", t.Addr(), err)
	}
	return &rfc2217Device{ident: ident{kind: t.Kind, addr: t.Addr()}, c: c}, nil
}

// Client returns the underlying RFC 2217 session, for reports (vspc-bridge
// probe shows the server's signature).
func (d *rfc2217Device) Client() *rfc2217.Client { return d.c }

func (d *rfc2217Device) Read(p []byte) (int, error) {
	n, err := d.c.Read(p)
	return n, d.wrap("read", err)
}

func (d *rfc2217Device) Write(p []byte) (int, error) {
	n, err := d.c.Write(p)
	return n, d.wrap("write", err)
}

// Close ends the session and closes the connection; it is idempotent.
func (d *rfc2217Device) Close() error {
	if !d.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := d.c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("devices: %s %s: close: %w", d.kind, d.addr, err)
	}
	return nil
}

func (d *rfc2217Device) SetSettings(ctx context.Context, s rfc2217.Settings) (rfc2217.Settings, error) {
	got, err := d.c.SetSettings(ctx, s)
	return got, d.wrap("set settings", err)
}

func (d *rfc2217Device) SetDTR(ctx context.Context, on bool) error {
	return d.wrap("DTR", d.c.SetDTR(ctx, on))
}

func (d *rfc2217Device) SetRTS(ctx context.Context, on bool) error {
	return d.wrap("RTS", d.c.SetRTS(ctx, on))
}

func (d *rfc2217Device) SetBreak(ctx context.Context, on bool) error {
	return d.wrap("BREAK", d.c.SetBreak(ctx, on))
}

func (d *rfc2217Device) Purge(ctx context.Context, what rfc2217.PurgeTarget) error {
	return d.wrap("purge", d.c.Purge(ctx, what))
}

func (d *rfc2217Device) ModemState(ctx context.Context) (rfc2217.ModemState, error) {
	m, err := d.c.ModemState(ctx)
	return m, d.wrap("modem state", err)
}

// Mismatch names the requests the server did not acknowledge (their values
// were assumed taken), "" when it acknowledged every one: the bridge shows
// it in status, as for an NPort that does not answer.
func (d *rfc2217Device) Mismatch() string {
	if u := d.c.Unacknowledged(); u != "" {
		return "no acknowledgement from the RFC 2217 server for " + u + " (assumed taken)"
	}
	return ""
}

// LineState returns the server's last NOTIFY-LINESTATE (0 before any);
// vspc passes changes on to the guest under its line-state mask.
func (d *rfc2217Device) LineState(context.Context) (rfc2217.LineState, error) {
	return d.c.LineState(), nil
}
