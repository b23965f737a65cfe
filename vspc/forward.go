package vspc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/vcuuid"
	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// This file carries a VM connection to the bridge that serves its port,
// when several bridges share one address (package cluster). The bridge
// that accepted the connection (the relay) speaks the handshake itself as
// far as it must to learn the port: DO-PROXY and the identification
// answers, or VMOTION-PEER. Then it stops decoding at that very event,
// hands its state over (a Handoff: the negotiated options, what the host
// said, the data it sent before its port was attached), and from then on
// moves bytes both ways as they are. The owner resumes the connection
// from the Handoff (ServeHandoff) and answers WILL-PROXY, WONT-PROXY or
// PEER-OK itself, through the relay:
//
//	ESXi host            relay bridge                       owner bridge
//	  handshake ────────► negotiates, asks GET-VM-*
//	  DO-PROXY, ids ────► the port is served elsewhere
//	                      (Bridger: ErrElsewhere)
//	                      Forwarder.Forward(Handoff) ──────► ServeHandoff: decide()
//	  ◄── replies so far  (its own, written before relaying)
//	                      the rest of the read, then ◄────► WILL-PROXY, data … (as if
//	  ◄───────────────── raw bytes both ways ─────────────►  the host were its own)
//
// Why a hand-over of state and not a replay of the host's bytes to the
// owner: the answers of an RFC 1143 negotiation depend on how the host's
// bytes interleaved with our own offers, so a second negotiation on a
// replay need not give the bytes the host was already sent. The state,
// taken at the event and moved whole (telnet.Options.AppendState, the
// decoder stopped by DecodeN), cannot differ: the owner goes on from the
// very byte where the relay stopped, and the relay writes nothing of its
// own after it. A relay that dies is a dropped connection for the host and
// for the owner's port, like any other.

// ErrElsewhere is what a Bridger's or HandOvers' error wraps for a port
// another bridge serves: with a Forwarder the connection is carried there.
var ErrElsewhere = errors.New("vspc: the port is served by another bridge")

// ErrServeHere: a Forwarder found the port free after all; the bridge
// opens it itself.
var ErrServeHere = errors.New("vspc: the port is free: serve it here")

// ErrNoHandOver: no bridge has a pending hand-over for a VMOTION-PEER (a
// wrong secret, an unknown sequence, or a PEER already used).
var ErrNoHandOver = errors.New("vspc: no hand-over for this VMOTION-PEER")

// Forwarder carries VM connections to the bridge that serves their port
// (package cluster).
type Forwarder interface {
	// Forward is asked about a DO-PROXY whose port another bridge serves:
	// the Bridger's error wrapped ErrElsewhere (why is that error). It
	// opens a stream to that bridge carrying h and returns it; from then
	// on the stream carries the connection's bytes, both ways, as they
	// are, and the server closes it when the connection ends.
	// ErrServeHere: the port is free now, so it is opened here; any other
	// error refuses the VM (WONT-PROXY). It may block for a few seconds
	// (while the owner cannot be reached); ctx ends with the server.
	Forward(ctx context.Context, h *Handoff, why error) (net.Conn, error)
}

// PeerResult is what HandOvers.TakeOver found for a VMOTION-PEER.
type PeerResult struct {
	// Conn: another bridge has the hand-over; this stream carries the
	// connection there (as Forwarder.Forward's does).
	Conn net.Conn
	// Req and SeqLen: the bridge that began the hand-over is gone and
	// this one claimed the port: it answers PEER-OK and serves it.
	Req    Request
	SeqLen int
}

// HandoffKind says what the host asked for on a handed-over connection.
type HandoffKind string

// Handoff kinds.
const (
	HandoffProxy HandoffKind = "proxy" // DO-PROXY (a connect, a reconnect)
	HandoffPeer  HandoffKind = "peer"  // VMOTION-PEER (a vMotion destination)
)

// Handoff is the state of a VM connection handed from the bridge that
// accepted it to the bridge that serves its port, taken at the DO-PROXY
// decision or at the VMOTION-PEER (see the top of forward.go). It goes
// over the member link as JSON; ParseHandoff checks it.
type Handoff struct {
	Kind HandoffKind `json:"kind"`
	Host string      `json:"host"` // the ESXi host's address as the relay saw it
	// Telnet is the negotiation state (telnet.Options.AppendState); the
	// decoder's BINARY and ours follow from it.
	Telnet []byte `json:"telnet"`
	// Known is the host's KNOWN-SUBOPTIONS-1, when it sent one.
	Known     []byte `json:"known,omitempty"`
	KnownSent bool   `json:"known_sent,omitempty"`
	KS2Sent   bool   `json:"ks2_sent,omitempty"` // our KNOWN-SUBOPTIONS-2 went out
	// DO-PROXY and the identification answers so far.
	Direction    string `json:"direction,omitempty"` // "C" or "S"
	ServiceURI   string `json:"service_uri,omitempty"`
	VMName       string `json:"vm_name,omitempty"`
	VCUUID       string `json:"vc_uuid,omitempty"`
	BIOSUUID     string `json:"bios_uuid,omitempty"`
	LocationUUID string `json:"location_uuid,omitempty"`
	Asked        uint8  `json:"asked,omitempty"` // GET-VM-* still unanswered
	// Payload is the VMOTION-PEER's seq‖secret.
	Payload []byte `json:"payload,omitempty"`
	// Pending is serial data the host sent before its port was attached
	// (decoded).
	Pending []byte `json:"pending,omitempty"`

	// Via names the bridge that relays the connection. It is not sent:
	// the receiving side sets it (for status).
	Via string `json:"-"`
}

// Port is the key of the port the handed-over connection is for (for a
// PEER it is known only from the hand-over's record).
func (h *Handoff) Port() PortKey { return PortKeyOf(h.VCUUID, h.VMName, h.ServiceURI) }

// maxHandoffField bounds the free-text fields of a Handoff.
const maxHandoffField = 4096

// ErrBadHandoff: ParseHandoff was given something a bridge cannot resume.
var ErrBadHandoff = errors.New("vspc: bad hand-off")

// ParseHandoff decodes and checks a Handoff from another bridge.
func ParseHandoff(b []byte) (*Handoff, error) {
	var h Handoff
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadHandoff, err)
	}
	bad := func(f string, a ...any) (*Handoff, error) {
		return nil, fmt.Errorf("%w: %s", ErrBadHandoff, fmt.Sprintf(f, a...))
	}
	var o telnet.Options
	if rest, err := o.ParseState(h.Telnet); err != nil {
		return bad("telnet state: %v", err)
	} else if len(rest) > 0 {
		return bad("%d bytes after the telnet state", len(rest))
	}
	switch h.Kind {
	case HandoffProxy:
		if len(h.Direction) != 1 {
			return bad("direction %q", h.Direction)
		}
		pr, err := ParseDoProxy(append([]byte(h.Direction), h.ServiceURI...))
		if err != nil {
			return bad("DO-PROXY: %v", err)
		}
		h.ServiceURI = pr.ServiceURI
		if len(h.Payload) > 0 {
			return bad("a DO-PROXY with a PEER payload")
		}
	case HandoffPeer:
		if len(h.Payload) < 2 || len(h.Payload) > maxHandoffField {
			return bad("PEER payload of %d bytes", len(h.Payload))
		}
		if h.Direction != "" || h.ServiceURI != "" {
			return bad("a PEER with a DO-PROXY")
		}
	default:
		return bad("kind %q", h.Kind)
	}
	for _, u := range []*string{&h.VCUUID, &h.BIOSUUID, &h.LocationUUID} {
		if *u == "" {
			continue
		}
		n, err := vcuuid.Normalize(*u)
		if err != nil || n != *u {
			return bad("UUID %q is not normalised", *u)
		}
	}
	switch {
	case len(h.Host) > 256:
		return bad("host address of %d bytes", len(h.Host))
	case len(h.ServiceURI) > maxHandoffField || len(h.VMName) > maxHandoffField:
		return bad("field over %d bytes", maxHandoffField)
	case len(h.Known) > 256:
		return bad("KNOWN-SUBOPTIONS-1 of %d bytes", len(h.Known))
	case len(h.Known) > 0 && !h.KnownSent:
		return bad("KNOWN-SUBOPTIONS-1 that was not sent")
	case len(h.Pending) > maxPending:
		return bad("%d bytes of pending data, at most %d", len(h.Pending), maxPending)
	case h.Asked&^uint8(askVCUUID|askName|askBIOS|askLocation) != 0:
		return bad("asked set %#x", h.Asked)
	}
	return &h, nil
}

// handoff takes the connection's state for kind. It runs on c's reader.
func (c *vmConn) handoff(kind HandoffKind, payload []byte) *Handoff {
	h := &Handoff{
		Kind:    kind,
		Host:    c.nc.RemoteAddr().String(),
		Telnet:  c.opts.AppendState(nil),
		KS2Sent: c.ksSent,
		VMName:  c.ident.name, VCUUID: c.ident.vcUUID, BIOSUUID: c.ident.biosUUID, LocationUUID: c.ident.locUUID,
		Asked:   uint8(c.asked),
		Payload: append([]byte(nil), payload...),
		Pending: append([]byte(nil), c.pending()...),
	}
	if c.known {
		h.KnownSent = true
		h.Known = []byte(c.vmKnown)
	}
	if kind == HandoffProxy && c.req != nil {
		h.Direction = string(rune(c.req.Direction))
		h.ServiceURI = c.req.ServiceURI
	}
	return h
}

// resume sets a fresh connection to the state h describes.
func (c *vmConn) resume(h *Handoff) error {
	if _, err := c.opts.ParseState(h.Telnet); err != nil {
		return err
	}
	c.dec.Binary = c.opts.Enabled(telnet.Remote, telnet.Binary)
	c.binOut.Store(c.opts.Enabled(telnet.Local, telnet.Binary))
	c.ksSent = h.KS2Sent
	if h.KnownSent {
		c.vmKnown, c.known = string(h.Known), true
	}
	c.ident = identity{name: h.VMName, vcUUID: h.VCUUID, biosUUID: h.BIOSUUID, locUUID: h.LocationUUID}
	c.asked = askSet(h.Asked)
	if len(h.Pending) > 0 {
		c.rare().pending = append([]byte(nil), h.Pending...)
	}
	if h.Kind == HandoffProxy {
		c.req = &ProxyRequest{Direction: Direction(h.Direction[0]), ServiceURI: h.ServiceURI}
	}
	return nil
}

// ServeHandoff resumes a VM connection another bridge accepted and handed
// over (its Forwarder): nc carries the host's bytes from where that bridge
// stopped, and h (from ParseHandoff) is the state it stopped in. It runs
// on the calling goroutine until the connection ends, like ServeConn; the
// server closes nc. A handed-over connection is never handed on again:
// if its port turns out to be served elsewhere too, it is refused.
func (s *Server) ServeHandoff(nc net.Conn, h *Handoff) {
	c := newConn(s, nc, nil) // never parks: it runs on the caller's goroutine
	c.relayed = true
	c.rare().via = h.Via
	if !s.adopt(c, nc) {
		return
	}
	if err := c.resume(h); err != nil {
		c.fail(fmt.Errorf("%w: %v", ErrBadHandoff, err))
		c.finish()
		return
	}
	c.hsBy = s.mono(time.Now().Add(s.conf().HandshakeTimeout))
	var err error
	switch h.Kind {
	case HandoffProxy:
		c.logger().Debug("VM connection handed over by another bridge: DO-PROXY")
		err = c.decide()
	case HandoffPeer:
		c.logger().Debug("VM connection handed over by another bridge: VMOTION-PEER")
		err = c.vmotionPeer(h.Payload)
	default:
		err = fmt.Errorf("%w: kind %q", ErrBadHandoff, h.Kind)
	}
	if err == nil {
		err = c.flush()
	}
	if err != nil {
		c.fail(err)
		c.finish()
		return
	}
	c.setDeadline()
	c.serve()
}

// errForward stops the decoder at the event whose connection goes to
// another bridge: c.cl.fwdConn is its stream.
var errForward = errors.New("vspc: connection handed to another bridge")

// forward asks the Forwarder about a DO-PROXY refused with ErrElsewhere.
// It returns errForward (the stream is in c.cl.fwdConn), ErrServeHere, or
// why the connection is refused.
func (c *vmConn) forward(why error) error {
	fw := c.srv.conf().Forwarder
	if fw == nil || c.relayed {
		return why
	}
	fc, err := fw.Forward(c.srv.ctx, c.handoff(HandoffProxy, nil), why)
	if err != nil {
		return err
	}
	c.rare().fwdConn = fc
	return errForward
}

// relayBuf is the size of each direction's buffer in a relay: with TCP's
// flow control on both sockets it is all a relay holds, so a host or a
// bridge that stops reading stops the other side (back-pressure).
const relayBuf = 8 << 10

// relay moves bytes between the host and the bridge that serves the port
// (c.cl.fwdConn) until either side ends, then ends the connection. rest is
// what the host sent after the event the connection was handed over at.
// The replies this bridge owed the host up to that event go first.
func (c *vmConn) relay(rest []byte) {
	s := c.srv
	r := c.rare()
	fc := r.fwdConn // set by forward or a PEER's hand-off
	r.fwdConn = nil
	c.role.Store(uint32(roleForwarded))
	c.hsBy, c.identBy = 0, 0
	c.nc.SetDeadline(time.Time{})
	err := c.flush()
	c.takePending()
	c.out, c.vmKnown, c.known = nil, "", false
	if err != nil {
		c.logger().Info("VM connection lost while handing it to the bridge that serves its port", "err", err)
		fc.Close()
		c.finish()
		return
	}
	s.count(func(k *Counters) { k.Forwarded++ })
	// Close closes the host's connection (s.conns) and, through its
	// context, the stream: a relay blocked on either side ends.
	stop := context.AfterFunc(s.ctx, func() { fc.Close() })
	defer stop()
	// The owner's side ends first (it closed, or died): what it sent is
	// written to the host, then both connections close. The host's side
	// ends first: the host closed or died, so both close at once (the
	// other direction may be blocked writing to a side that no longer
	// reads). A failed write to the owner means the owner is going: its
	// direction ends by itself and delivers what it sent before.
	done := make(chan struct{})
	s.wg.Go(func() {
		defer close(done)
		pump(c.nc, fc) // owner → host
		c.nc.Close()
		fc.Close()
	})
	// host → owner: first the rest of the read the hand-off stopped in
	// (written here, not before the other direction runs: the owner may
	// be writing to us at the same time).
	hostEnded := false
	if len(rest) == 0 || writeAll(fc, rest) == nil {
		hostEnded = pump(fc, c.nc)
	}
	if hostEnded {
		fc.Close()
		c.nc.Close()
	}
	<-done
	c.finish()
}

func writeAll(w io.Writer, b []byte) error {
	_, err := w.Write(b)
	return err
}

// pump copies src to dst through one bounded buffer until either fails;
// it reports whether src ended (rather than a write to dst failing).
func pump(dst io.Writer, src io.Reader) (srcEnded bool) {
	buf := make([]byte, relayBuf)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return false
			}
		}
		if err != nil {
			return true
		}
	}
}

// handOn relays the connection (c.cl.fwdConn). A connection Serve accepted
// does it on a fresh goroutine, so that the handshake's grown stack is
// freed (as decide's respawn does); ServeConn's and ServeHandoff's callers
// wait for their connection on their own goroutine.
func (c *vmConn) handOn(rest []byte) {
	if c.owned {
		go c.relay(rest)
		return
	}
	c.relay(rest)
}
