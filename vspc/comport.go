package vspc

import (
	"context"
	"errors"
	"time"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// RFC 2217 toward the VM: ESXi sends WILL COM-PORT-OPTION once the proxy
// session is up (and again on a vMotion destination); we answer DO and act
// as the access server. The negotiated state (settings, masks) lives on
// the Port, not on the connection, so it carries over a vMotion without
// being re-sent to the device (seed: "They do not renegotiate the Com
// Port configuration").

// LineBackend is a Backend that controls a serial line; the guest's
// settings reach it through RFC 2217. Backends without it answer with the
// settings in effect and ErrNotSupported for line control.
type LineBackend interface {
	Backend
	rfc2217.Port
}

// comSignature is our answer to an empty SIGNATURE.
const comSignature = "vspc-bridge"

// modemPoll is how often a port whose VM negotiated COM-PORT-OPTION reads
// its device's modem lines (only for devices that can tell).
const modemPoll = time.Second

// noLine is the rfc2217.Port of a backend that has no serial line.
type noLine struct{}

func (noLine) SetSettings(context.Context, rfc2217.Settings) (rfc2217.Settings, error) {
	return rfc2217.Settings{}, rfc2217.ErrNotSupported
}
func (noLine) SetDTR(context.Context, bool) error               { return rfc2217.ErrNotSupported }
func (noLine) SetRTS(context.Context, bool) error               { return rfc2217.ErrNotSupported }
func (noLine) SetBreak(context.Context, bool) error             { return rfc2217.ErrNotSupported }
func (noLine) Purge(context.Context, rfc2217.PurgeTarget) error { return rfc2217.ErrNotSupported }
func (noLine) ModemState(context.Context) (rfc2217.ModemState, error) {
	return 0, rfc2217.ErrNotSupported
}

func (p *Port) line() rfc2217.Port {
	if lb, ok := p.backend.(LineBackend); ok {
		return lb
	}
	return noLine{}
}

// comRequest handles one COM-PORT-OPTION subnegotiation from the VM and
// returns the reply to send on the connection it came from.
func (p *Port) comRequest(payload []byte) []byte {
	p.comMu.Lock()
	defer p.comMu.Unlock()
	if p.com == nil {
		p.com = rfc2217.NewAccessServer(comSignature)
	}
	ctx, cancel := context.WithTimeout(p.srv.ctx, 3*time.Second)
	defer cancel()
	reply, err := p.com.Handle(ctx, payload, p.line())
	if err != nil && !errors.Is(err, rfc2217.ErrNotSupported) {
		p.logger().Warn("COM-PORT-OPTION request from the guest", "err", err)
	} else if err != nil {
		p.logger().Debug("COM-PORT-OPTION request the device cannot do", "err", err)
	}
	suspended := p.com.Suspended()
	p.startModemPoll()
	p.mu.Lock()
	if p.suspend != suspended {
		p.suspend = suspended
		p.logger().Info("guest flow control", "suspended", suspended)
		p.kickLocked()
	}
	p.mu.Unlock()
	return reply
}

// lineStater is a LineBackend whose device reports line events (parity,
// framing, overrun, BREAK received; an NPort's command port does): each
// call returns those since the last call.
type lineStater interface {
	LineState(ctx context.Context) (rfc2217.LineState, error)
}

// startModemPoll starts, once, the goroutine that reports the device's
// modem state to the VM (NOTIFY-MODEMSTATE per the VM's mask), and its
// line events where it has them (NOTIFY-LINESTATE per the VM's line-state
// mask). Devices that cannot tell (raw TCP, telnet) are not polled: idle
// ports use no CPU.
func (p *Port) startModemPoll() {
	if p.polling {
		return
	}
	if _, ok := p.backend.(LineBackend); !ok {
		return
	}
	p.polling = true
	p.srv.wg.Add(1)
	go func() {
		defer p.srv.wg.Done()
		t := time.NewTicker(modemPoll)
		defer t.Stop()
		done := p.done.wait()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(p.srv.ctx, modemPoll)
			ms, err := p.line().ModemState(ctx)
			var line rfc2217.LineState
			if ls, ok := p.line().(lineStater); ok && err == nil {
				if l, lerr := ls.LineState(ctx); lerr == nil {
					line = l
				}
			}
			cancel()
			if errors.Is(err, rfc2217.ErrNotSupported) {
				return
			}
			if err != nil {
				continue
			}
			p.comMu.Lock()
			msg := p.com.Notify(nil, line, ms)
			p.comMu.Unlock()
			if len(msg) > 0 {
				if p.sendRaw(msg) != nil {
					return
				}
			}
		}
	}()
}

// sendRaw queues protocol bytes (already telnet-encoded) for the VM, in
// order with the data.
func (p *Port) sendRaw(b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for !p.closed && len(p.q)-p.head > p.srv.conf().Buffer {
		p.waitLocked()
	}
	if p.closed {
		return ErrPortClosed
	}
	p.q = append(p.q, b...)
	p.kickLocked()
	return nil
}

// ComSettings returns the line settings the guest negotiated, if any.
func (p *Port) ComSettings() (rfc2217.Settings, bool) {
	p.comMu.Lock()
	defer p.comMu.Unlock()
	if p.com == nil {
		return rfc2217.Settings{}, false
	}
	return p.com.State().Settings, true
}
