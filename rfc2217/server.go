package rfc2217

import (
	"context"
	"errors"
	"fmt"
)

// DefaultServerSignature is what an AccessServer answers to an empty
// SIGNATURE when it was given none.
const DefaultServerSignature = "vspc-bridge"

// ServerState is everything an AccessServer has negotiated with its client,
// as a plain value (State returns a copy). The AccessServer, not the
// connection, holds it: package vspc keeps one per VM serial port, so when
// a vMotion renegotiates COM-PORT-OPTION on the new host's connection the
// same settings, masks and last notified states answer it, and nothing is
// re-sent to the device.
type ServerState struct {
	// Settings in effect on the port, as last set or reported; zero fields
	// are unknown. A request for the value already in effect is answered
	// without calling the port.
	Settings Settings
	DTR      bool // last DTR set by the client (assumed on at start, like a UART after open)
	RTS      bool // last RTS set by the client (assumed on at start)
	Break    bool // BREAK is on

	LineMask  LineState  // SET-LINESTATE-MASK; RFC default 0 (no line notifications)
	ModemMask ModemState // SET-MODEMSTATE-MASK; RFC default 255

	// Suspended is set by the client's FLOWCONTROL-SUSPEND and cleared by
	// FLOWCONTROL-RESUME: the caller holds back data toward the client.
	Suspended bool

	// ClientSignature is the text of the client's SIGNATURE, if it sent one.
	ClientSignature string

	// Line and Modem are the states last reported by Notify or by an
	// answer to a poll; ModemSent says the modem state was sent at least
	// once (Notify always sends the first one, as ser2net does).
	Line      LineState
	Modem     ModemState
	ModemSent bool
}

// DefaultServerState is the state of a fresh session (RFC 2217 defaults).
func DefaultServerState() ServerState {
	return ServerState{DTR: true, RTS: true, ModemMask: 0xff}
}

// AccessServer is the RFC 2217 access-server role as a state machine
// without I/O: the caller (the vSPC session toward a VM, or any telnet
// server) negotiates COM-PORT-OPTION itself, hands every COM-PORT-OPTION
// subnegotiation from the client to Handle, sends the reply it returns,
// calls Notify when the device's line or modem state changes, and consults
// Suspended before sending data to the client.
//
// Create one with NewAccessServer (the zero value has a modem-state mask
// of 0 and no signature). An AccessServer is not safe for concurrent use:
// one session goroutine owns it.
type AccessServer struct {
	signature string
	st        ServerState
}

// NewAccessServer returns an AccessServer in the RFC default state. It
// answers an empty SIGNATURE with signature ("" means
// DefaultServerSignature).
func NewAccessServer(signature string) *AccessServer {
	if signature == "" {
		signature = DefaultServerSignature
	}
	return &AccessServer{signature: signature, st: DefaultServerState()}
}

// State returns a copy of the negotiated state.
func (s *AccessServer) State() ServerState { return s.st }

// Suspended reports whether the client asked us to stop sending data
// (FLOWCONTROL-SUSPEND without a RESUME since).
func (s *AccessServer) Suspended() bool { return s.st.Suspended }

// Handle processes one client subnegotiation: payload is the unescaped
// payload after IAC SB COM-PORT-OPTION (telnet.Event.Data). It drives port
// as requested and returns the reply to send, if any, as complete wire
// bytes (IAC SB 44 <code+100> <value> IAC SE, 255 doubled), carrying the
// value actually in effect. A zero value is a query and changes nothing.
//
// When the port fails (a pty refuses DTR), reply still holds the answer
// the client must get — the value still in effect — and err says what
// failed: send the reply, log the error, carry on. A payload that does not
// parse, or a server code sent by the client, yields a nil reply and an
// error; such messages should be logged and ignored.
func (s *AccessServer) Handle(ctx context.Context, payload []byte, port Port) (reply []byte, err error) {
	m, err := Parse(payload)
	if err != nil {
		return nil, err
	}
	if m.Command.IsServer() {
		return nil, fmt.Errorf("rfc2217: client sent server command %v", m.Command)
	}
	r := Message{Command: m.Command.Reply()}
	switch m.Command {
	case Signature:
		if m.Text != "" {
			s.st.ClientSignature = m.Text
			return nil, nil
		}
		r.Text = s.signature
	case SetBaudrate:
		err = s.apply(ctx, port, Settings{Baud: m.Baud})
		r.Baud = s.st.Settings.Baud
	case SetDatasize:
		if v := m.Value; v != 0 && (v < 5 || v > 8) {
			err = fmt.Errorf("rfc2217: client asked for data size %d", v)
		} else {
			err = s.apply(ctx, port, Settings{DataSize: v})
		}
		r.Value = s.st.Settings.DataSize
	case SetParity:
		if p := m.Parity(); p > ParitySpace {
			err = fmt.Errorf("rfc2217: client asked for parity %d", p)
		} else {
			err = s.apply(ctx, port, Settings{Parity: p})
		}
		r.Value = uint8(s.st.Settings.Parity)
	case SetStopsize:
		if v := m.StopSize(); v > Stop15 {
			err = fmt.Errorf("rfc2217: client asked for stop size %d", v)
		} else {
			err = s.apply(ctx, port, Settings{StopSize: v})
		}
		r.Value = uint8(s.st.Settings.StopSize)
	case SetControl:
		var v Control
		v, err = s.control(ctx, port, m.Control())
		r.Value = uint8(v)
	case NotifyLinestate:
		r.Value = uint8(s.st.Line & s.st.LineMask)
	case NotifyModemstate:
		// A poll (pyserial's poll_modem): answer with the current state.
		modem, merr := port.ModemState(ctx)
		if merr == nil {
			s.st.Modem = modem & ModemLines // deltas are relative to what was sent
		} else if !errors.Is(merr, ErrNotSupported) {
			err = fmt.Errorf("rfc2217: reading modem state: %w", merr)
		}
		s.st.ModemSent = true
		r.Value = uint8(s.st.Modem & s.st.ModemMask)
	case FlowControlSuspend:
		s.st.Suspended = true
		return nil, nil
	case FlowControlResume:
		s.st.Suspended = false
		return nil, nil
	case SetLinestateMask:
		s.st.LineMask = m.LineState()
		r.Value = m.Value
	case SetModemstateMask:
		s.st.ModemMask = m.ModemState()
		r.Value = m.Value
	case PurgeData:
		t := m.Purge()
		if t < PurgeRX || t > PurgeBoth {
			return nil, fmt.Errorf("rfc2217: client asked to purge %d", m.Value)
		}
		if perr := port.Purge(ctx, t); perr != nil {
			err = fmt.Errorf("rfc2217: purge %v: %w", t, perr)
		}
		r.Value = m.Value
	}
	return AppendMessage(nil, r), err
}

// apply sets the set fields of req on port (or, for an all-zero req,
// queries it) and records what is in effect.
func (s *AccessServer) apply(ctx context.Context, port Port, req Settings) error {
	if req != (Settings{}) && req.Merge(s.st.Settings) == s.st.Settings {
		return nil // already in effect: do not touch the device
	}
	eff, err := port.SetSettings(ctx, req)
	if err != nil {
		if req == (Settings{}) {
			return fmt.Errorf("rfc2217: querying port settings: %w", err)
		}
		return fmt.Errorf("rfc2217: setting %v: %w", req, err)
	}
	// Where the port does not know, assume the request took; where neither
	// knows, keep what we knew.
	s.st.Settings = eff.Merge(req).Merge(s.st.Settings)
	return nil
}

// control handles SET-CONTROL value v and returns the value to answer.
func (s *AccessServer) control(ctx context.Context, port Port, v Control) (Control, error) {
	flow := func() FlowControl {
		if f := s.st.Settings.Flow; f >= FlowNone && f <= FlowHardware {
			return f
		}
		return FlowNone
	}
	var err error
	switch {
	case v <= ControlFlowHardware: // 0 query, 1–3 set
		err = s.apply(ctx, port, Settings{Flow: FlowControl(v)})
		return Control(flow()), err
	case v >= ControlInFlowQuery && v <= ControlInFlowHardware:
		// Inbound flow control follows the outbound setting: one knob.
		var f FlowControl
		if v != ControlInFlowQuery {
			f = FlowControl(v - ControlInFlowQuery)
		}
		err = s.apply(ctx, port, Settings{Flow: f})
		return ControlInFlowQuery + Control(flow()), err
	case v == ControlBreakQuery:
	case v == ControlBreakOn, v == ControlBreakOff:
		on := v == ControlBreakOn
		if err = port.SetBreak(ctx, on); err == nil {
			s.st.Break = on
		}
	case v == ControlDTRQuery:
	case v == ControlDTROn, v == ControlDTROff:
		on := v == ControlDTROn
		if err = port.SetDTR(ctx, on); err == nil {
			s.st.DTR = on
		}
	case v == ControlRTSQuery:
	case v == ControlRTSOn, v == ControlRTSOff:
		on := v == ControlRTSOn
		if err = port.SetRTS(ctx, on); err == nil {
			s.st.RTS = on
		}
	case v == ControlInFlowDTR:
		return ControlInFlowQuery + Control(flow()), fmt.Errorf("rfc2217: SET-CONTROL %v: %w", v, ErrNotSupported)
	default: // DCD/DSR flow control, unassigned values
		return Control(flow()), fmt.Errorf("rfc2217: SET-CONTROL %v: %w", v, ErrNotSupported)
	}
	if err != nil {
		err = fmt.Errorf("rfc2217: SET-CONTROL %v: %w", v, err)
	}
	switch v.group() {
	case groupBreak:
		return pick(s.st.Break, ControlBreakOn, ControlBreakOff), err
	case groupDTR:
		return pick(s.st.DTR, ControlDTROn, ControlDTROff), err
	default: // groupRTS
		return pick(s.st.RTS, ControlRTSOn, ControlRTSOff), err
	}
}

// Notify appends to dst the notifications the client is owed for the
// current line and modem state, filtered by the client's masks:
// NOTIFY-LINESTATE when the masked line state changed, NOTIFY-MODEMSTATE
// when a masked modem line changed (and always the first time, like
// ser2net). The delta bits (ΔCTS, ΔDSR, ΔCD, trailing-edge RI) are
// computed from the previous state and OR-ed with any the caller passes.
func (s *AccessServer) Notify(dst []byte, line LineState, modem ModemState) []byte {
	if lm := line & s.st.LineMask; lm != s.st.Line&s.st.LineMask {
		dst = AppendMessage(dst, Message{Command: NotifyLinestate.Reply(), Value: uint8(lm)})
	}
	s.st.Line = line

	lines, prev := modem&ModemLines, s.st.Modem&ModemLines
	delta := modem &^ ModemLines
	changed := lines ^ prev
	if changed&ModemCTS != 0 {
		delta |= ModemDeltaCTS
	}
	if changed&ModemDSR != 0 {
		delta |= ModemDeltaDSR
	}
	if changed&ModemCD != 0 {
		delta |= ModemDeltaCD
	}
	if prev&ModemRI != 0 && lines&ModemRI == 0 {
		delta |= ModemTERI
	}
	if !s.st.ModemSent {
		delta = modem &^ ModemLines // first report: nothing to compare with
	}
	full := (lines | delta) & s.st.ModemMask
	if (!s.st.ModemSent && s.st.ModemMask != 0) || (changed|delta)&s.st.ModemMask != 0 {
		dst = AppendMessage(dst, Message{Command: NotifyModemstate.Reply(), Value: uint8(full)})
		s.st.ModemSent = true
	}
	s.st.Modem = lines
	return dst
}
