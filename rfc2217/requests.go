package rfc2217

// The request/acknowledgement layer of Client: Port calls send a batch of
// COM-PORT-OPTION requests through the session (client.go) and wait, up to
// AckTimeout, for the reader to record the server's answers in their slots.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// ackSlot names what a server acknowledgement answers. SET-CONTROL has one
// slot per group of values: the reply to DTR ON must be a DTR value.
type ackSlot uint8

const (
	slotBaud ackSlot = iota
	slotDatasize
	slotParity
	slotStopsize
	slotControl  // SET-CONTROL, one slot per group: slotControl+groupFlow … slotControl+groupUnknown
	slotLineMask = slotControl + numGroups
)

const (
	slotModemMask = slotLineMask + 1 + iota
	slotPurge
	slotModemState // NOTIFY-MODEMSTATE, answering a poll
	slotSignature
	numSlots
)

// slotOf returns the slot a message with base command c and value v
// belongs to, and false for commands that are not acknowledgements.
func slotOf(c Command, v uint8) (ackSlot, bool) {
	switch c {
	case SetBaudrate:
		return slotBaud, true
	case SetDatasize:
		return slotDatasize, true
	case SetParity:
		return slotParity, true
	case SetStopsize:
		return slotStopsize, true
	case SetControl:
		return slotControl + ackSlot(Control(v).group()), true
	case SetLinestateMask:
		return slotLineMask, true
	case SetModemstateMask:
		return slotModemMask, true
	case PurgeData:
		return slotPurge, true
	case NotifyModemstate:
		return slotModemState, true
	case Signature:
		return slotSignature, true
	}
	return 0, false
}

type ack struct {
	seq uint64 // acknowledgements received in this slot so far
	msg Message
}

// result of one request in a batch.
type result struct {
	req   Message
	reply Message
	acked bool
}

// roundTrip sends msgs and waits up to AckTimeout (or ctx) for an
// acknowledgement of each of them. It returns
// per-message results and the slots that received acknowledgements
// nobody asked for during the wait (sredird's "105 1" to a DTR request).
func (c *Client) roundTrip(ctx context.Context, msgs []Message) ([]result, []Message, error) {
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, nil, net.ErrClosed
	case c.rerr != nil:
		return nil, nil, fmt.Errorf("rfc2217: connection ended: %w", c.rerr)
	case c.werr != nil:
		return nil, nil, c.werr
	case !c.neg.Enabled(telnet.Local, telnet.ComPort):
		return nil, nil, fmt.Errorf("rfc2217: server did not agree to COM-PORT-OPTION: %w", ErrNotSupported)
	}
	var start [numSlots]uint64
	for i := range c.acks {
		start[i] = c.acks[i].seq
	}
	var asked, wait [numSlots]bool
	slots := make([]ackSlot, len(msgs))
	for i, m := range msgs {
		c.ctl = AppendMessage(c.ctl, m)
		s, ok := slotOf(m.Command, m.Value)
		slots[i] = s
		if ok {
			asked[s] = true
			// A kind the server left unacknowledged last time is not
			// waited for again (ser2net on a pty never acks DTR): one
			// stall, not one per request, until it acks that kind.
			_, quiet := c.unacked[s]
			wait[s] = !quiet
		}
	}
	c.broadcastLocked()

	timer := time.NewTimer(c.ackTimeout)
	defer timer.Stop()
	for {
		done := true
		for s := range wait {
			if wait[s] && c.acks[s].seq == start[s] {
				done = false
			}
		}
		if done {
			break
		}
		switch {
		case c.closed:
			return nil, nil, net.ErrClosed
		case c.rerr != nil:
			return nil, nil, fmt.Errorf("rfc2217: connection ended: %w", c.rerr)
		}
		if !c.waitLocked(ctx, timer.C) {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			break // ack timeout: carry on
		}
	}
	res := make([]result, len(msgs))
	for i, m := range msgs {
		res[i].req = m
		if s := slots[i]; asked[s] && c.acks[s].seq != start[s] {
			res[i].reply, res[i].acked = c.acks[s].msg, true
		}
	}
	var unasked []Message
	for s := range c.acks {
		if !asked[s] && c.acks[s].seq != start[s] && ackSlot(s) != slotModemState && ackSlot(s) != slotSignature {
			unasked = append(unasked, c.acks[s].msg)
		}
	}
	return res, unasked, nil
}

// logResults reports missing, adjusted and unexpected acknowledgements,
// and keeps the requests still unacknowledged (see Unacknowledged).
func (c *Client) logResults(res []result, unasked []Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range res {
		if s, ok := slotOf(r.req.Command, r.req.Value); ok && !isQuery(r.req) {
			if r.acked {
				delete(c.unacked, s)
			} else {
				if c.unacked == nil {
					c.unacked = make(map[ackSlot]Message)
				}
				c.unacked[s] = r.req
			}
		}
	}
	for _, r := range res {
		switch {
		case !r.acked && isQuery(r.req):
			c.quirkLocked("noanswer-"+ackKey(r.req), "rfc2217: server did not answer a query", "request", r.req, "timeout", c.ackTimeout)
		case !r.acked:
			c.quirkLocked("noack-"+ackKey(r.req), "rfc2217: no acknowledgement from server; assuming the requested value",
				"request", r.req, "timeout", c.ackTimeout)
		case r.reply.Baud != r.req.Baud || r.reply.Value != r.req.Value:
			if isQuery(r.req) {
				continue
			}
			c.log.Info("rfc2217: server answered with a different value", "request", r.req, "reply", r.reply)
		}
	}
	for _, m := range unasked {
		c.quirkLocked("unasked-"+m.String(), "rfc2217: unexpected acknowledgement from server (sredird acks every SET-CONTROL as FLOW-NONE)", "reply", m)
	}
}

// ackKey names the kind of a request for log-once bookkeeping.
func ackKey(m Message) string {
	if m.Command == SetControl {
		return m.Command.String() + "-" + groupNames[m.Control().group()]
	}
	return m.Command.String()
}

func isQuery(m Message) bool {
	switch m.Command {
	case SetBaudrate:
		return m.Baud == 0
	case SetControl:
		switch m.Control() {
		case ControlFlowQuery, ControlBreakQuery, ControlDTRQuery, ControlRTSQuery, ControlInFlowQuery:
			return true
		}
		return false
	case SetDatasize, SetParity, SetStopsize:
		return m.Value == 0
	}
	return false
}

func validate(s Settings) error {
	var errs []error
	if s.DataSize != 0 && (s.DataSize < 5 || s.DataSize > 8) {
		errs = append(errs, fmt.Errorf("rfc2217: invalid data size %d (want 5–8)", s.DataSize))
	}
	if s.Parity > ParitySpace {
		errs = append(errs, fmt.Errorf("rfc2217: invalid parity %d", s.Parity))
	}
	if s.StopSize > Stop15 {
		errs = append(errs, fmt.Errorf("rfc2217: invalid stop size %d", s.StopSize))
	}
	if s.Flow > FlowHardware {
		errs = append(errs, fmt.Errorf("rfc2217: invalid flow control %d", s.Flow))
	}
	return errors.Join(errs...)
}

// SetSettings sends the set fields of s to the server (SET-BAUDRATE,
// SET-DATASIZE, SET-PARITY, SET-STOPSIZE, SET-CONTROL for flow control),
// waits up to AckTimeout for the acknowledgements, and returns the
// settings in effect: the acknowledged values, or the requested ones where
// the server did not answer (logged). Zero fields are left as they are.
func (c *Client) SetSettings(ctx context.Context, s Settings) (Settings, error) {
	if err := c.awaitReady(ctx); err != nil {
		return c.Settings(), err
	}
	return c.applySettings(ctx, s, false)
}

func (c *Client) applySettings(ctx context.Context, s Settings, queryUnset bool) (Settings, error) {
	if err := validate(s); err != nil {
		return c.Settings(), err
	}
	var msgs []Message
	add := func(set bool, m Message) {
		if set || queryUnset {
			msgs = append(msgs, m)
		}
	}
	add(s.Baud != 0, Message{Command: SetBaudrate, Baud: s.Baud})
	add(s.DataSize != 0, Message{Command: SetDatasize, Value: s.DataSize})
	add(s.Parity != 0, Message{Command: SetParity, Value: uint8(s.Parity)})
	add(s.StopSize != 0, Message{Command: SetStopsize, Value: uint8(s.StopSize)})
	add(s.Flow != 0, Message{Command: SetControl, Value: uint8(s.Flow)})
	if len(msgs) == 0 {
		return c.Settings(), nil
	}
	res, unasked, err := c.roundTrip(ctx, msgs)
	if err != nil {
		return c.Settings(), err
	}
	c.logResults(res, unasked)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range res {
		if r.acked || isQuery(r.req) {
			continue // the reader recorded the reply
		}
		switch r.req.Command {
		case SetBaudrate:
			c.settings.Baud = r.req.Baud
		case SetDatasize:
			c.settings.DataSize = r.req.Value
		case SetParity:
			c.settings.Parity = r.req.Parity()
		case SetStopsize:
			c.settings.StopSize = r.req.StopSize()
		case SetControl:
			c.settings.Flow = FlowControl(r.req.Value)
		}
	}
	return c.settings, nil
}

func (c *Client) control(ctx context.Context, v Control) error {
	if err := c.awaitReady(ctx); err != nil {
		return err
	}
	res, unasked, err := c.roundTrip(ctx, []Message{{Command: SetControl, Value: uint8(v)}})
	if err != nil {
		return err
	}
	c.logResults(res, unasked)
	return nil
}

// SetDTR sets DTR (SET-CONTROL 8/9). A missing or different
// acknowledgement is logged, not an error (ser2net on a pty never acks).
func (c *Client) SetDTR(ctx context.Context, on bool) error {
	return c.control(ctx, pick(on, ControlDTROn, ControlDTROff))
}

// SetRTS sets RTS (SET-CONTROL 11/12).
func (c *Client) SetRTS(ctx context.Context, on bool) error {
	return c.control(ctx, pick(on, ControlRTSOn, ControlRTSOff))
}

// SetBreak sets or clears BREAK (SET-CONTROL 5/6).
func (c *Client) SetBreak(ctx context.Context, on bool) error {
	return c.control(ctx, pick(on, ControlBreakOn, ControlBreakOff))
}

func pick(on bool, yes, no Control) Control {
	if on {
		return yes
	}
	return no
}

// Purge asks the server to purge its buffers (PURGE-DATA).
func (c *Client) Purge(ctx context.Context, what PurgeTarget) error {
	if what < PurgeRX || what > PurgeBoth {
		return fmt.Errorf("rfc2217: invalid purge target %d", what)
	}
	if err := c.awaitReady(ctx); err != nil {
		return err
	}
	res, unasked, err := c.roundTrip(ctx, []Message{{Command: PurgeData, Value: uint8(what)}})
	if err != nil {
		return err
	}
	c.logResults(res, unasked)
	return nil
}

// ModemState returns the modem state last notified by the server. Before
// any notification it polls once (an empty NOTIFY-MODEMSTATE, which
// pyserial's server answers) and waits up to AckTimeout; if nothing comes
// it returns ErrNotSupported, then and without waiting on later calls
// until the server sends a notification.
func (c *Client) ModemState(ctx context.Context) (ModemState, error) {
	c.mu.Lock()
	switch {
	case c.haveModem:
		defer c.mu.Unlock()
		return c.modem, nil
	case c.modemPoll:
		c.mu.Unlock()
		return 0, fmt.Errorf("rfc2217: server sent no modem state: %w", ErrNotSupported)
	}
	c.mu.Unlock()
	if err := c.awaitReady(ctx); err != nil {
		return 0, err
	}
	res, _, err := c.roundTrip(ctx, []Message{{Command: NotifyModemstate, Poll: true}})
	if err != nil {
		return 0, err
	}
	if res[0].acked {
		return res[0].reply.ModemState(), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.haveModem {
		return c.modem, nil
	}
	c.modemPoll = true
	return 0, fmt.Errorf("rfc2217: server sent no modem state: %w", ErrNotSupported)
}

var _ Port = (*Client)(nil)

// Unacknowledged lists the change requests the server did not acknowledge
// within AckTimeout (their values were assumed), each the latest of its
// kind, "" when every one was: "SET-BAUDRATE 57600, SET-CONTROL DTR-ON".
// A later acknowledged request of the same kind clears its entry.
func (c *Client) Unacknowledged() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.unacked) == 0 {
		return ""
	}
	slots := make([]ackSlot, 0, len(c.unacked))
	for s := range c.unacked {
		slots = append(slots, s)
	}
	slices.Sort(slots)
	var b strings.Builder
	for i, s := range slots {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.unacked[s].String())
	}
	return b.String()
}
