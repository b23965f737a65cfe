//go:build linux

package devices

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"

	"go.bug.st/serial"
	"golang.org/x/sys/unix"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// ErrBadSetting is wrapped by SetSettings and Open errors for a value the
// tty driver (or go.bug.st/serial) rejected: a speed, data size, parity or
// stop size it cannot do.
var ErrBadSetting = errors.New("devices: setting not supported by the tty")

// serialDevice is a local tty (target.KindSerial).
//
// go.bug.st/serial owns the first descriptor: Open, SetMode (speed, data
// bits, parity, stop bits), Read, DTR/RTS, modem status and buffer resets.
// It has no flow control setting, no BREAK on/off, no write timeout and no
// access to its descriptor, so the device opens the tty a second time
// (non-blocking, through the runtime poller) for termios flow flags,
// TIOCSBRK/TIOCCBRK, reading back the settings in effect (TCGETS2), and
// for Write: a Write stalled by flow control is then unblocked by Close.
// Termios belongs to the tty, not the descriptor, so both see the same
// line.
type serialDevice struct {
	ident        // kind serial, addr the path; closed is set by Close
	path  string // the tty
	log   *slog.Logger
	port  serial.Port // first descriptor (go.bug.st/serial)
	ctl   *os.File    // second descriptor, non-blocking

	mu sync.Mutex // serialises Port calls (read-modify-write of termios)

	closeOnce sync.Once
	closeErr  error
}

var _ Device = (*serialDevice)(nil)

func openSerial(_ context.Context, t target.Target, initial rfc2217.Settings, log *slog.Logger) (Device, error) {
	if err := validSettings(initial); err != nil {
		return nil, fmt.Errorf("devices: serial %s: %w", t.Path, err)
	}
	// The control descriptor first: go.bug.st/serial sets TIOCEXCL, after
	// which only root could open the tty again.
	fd, err := unix.Open(t.Path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("devices: serial %s: open: %w", t.Path, err)
	}
	ctl := os.NewFile(uintptr(fd), t.Path)
	d := &serialDevice{ident: ident{kind: target.KindSerial, addr: t.Path}, path: t.Path, log: log, ctl: ctl}
	cur, err := d.readback()
	if err != nil {
		ctl.Close()
		return nil, err // "not a tty" and the like
	}
	mode, _ := d.modeFor(initial.Merge(cur), cur)
	port, err := serial.Open(t.Path, &mode)
	if err != nil {
		ctl.Close()
		return nil, fmt.Errorf("devices: serial %s: open: %w", t.Path, portErr(err))
	}
	d.port = port
	// serial.Open cleared CRTSCTS and (raw mode) IXON/IXOFF: flow is none
	// unless asked for.
	if initial.Flow != 0 {
		if err := d.setFlow(initial.Flow); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// validSettings rejects values outside RFC 2217's ranges.
func validSettings(s rfc2217.Settings) error {
	switch {
	case s.DataSize != 0 && (s.DataSize < 5 || s.DataSize > 8):
		return fmt.Errorf("data size %d: %w", s.DataSize, ErrBadSetting)
	case s.Parity > rfc2217.ParitySpace:
		return fmt.Errorf("parity %d: %w", s.Parity, ErrBadSetting)
	case s.StopSize > rfc2217.Stop15:
		return fmt.Errorf("stop size %d: %w", s.StopSize, ErrBadSetting)
	case s.Flow > rfc2217.FlowHardware:
		return fmt.Errorf("flow control %d: %w", s.Flow, ErrBadSetting)
	}
	return nil
}

// modeFor turns complete settings into a go.bug.st/serial Mode. 1.5 stop
// bits exist only as CSTOPB with 5 data bits (a 16550 then sends 1.5);
// with more data bits the stop bits in effect (cur) are kept and ok15 is
// false.
func (d *serialDevice) modeFor(s, cur rfc2217.Settings) (m serial.Mode, ok15 bool) {
	m = serial.Mode{BaudRate: int(s.Baud), DataBits: int(s.DataSize)}
	switch s.Parity {
	case rfc2217.ParityOdd:
		m.Parity = serial.OddParity
	case rfc2217.ParityEven:
		m.Parity = serial.EvenParity
	case rfc2217.ParityMark:
		m.Parity = serial.MarkParity
	case rfc2217.ParitySpace:
		m.Parity = serial.SpaceParity
	default:
		m.Parity = serial.NoParity
	}
	stop := s.StopSize
	ok15 = true
	if stop == rfc2217.Stop15 {
		if s.DataSize == 5 {
			stop = rfc2217.Stop2
		} else {
			ok15 = false
			stop = cur.StopSize
		}
	}
	if stop == rfc2217.Stop2 || stop == rfc2217.Stop15 {
		m.StopBits = serial.TwoStopBits
	} else {
		m.StopBits = serial.OneStopBit
	}
	return m, ok15
}

// control runs f with the control descriptor.
func (d *serialDevice) control(f func(fd int) error) error {
	rc, err := d.ctl.SyscallConn()
	if err != nil {
		return d.wrap("control", err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return d.wrap("control", err)
	}
	return ferr
}

// readback returns the settings in effect on the tty.
func (d *serialDevice) readback() (rfc2217.Settings, error) {
	var tio *unix.Termios
	err := d.control(func(fd int) error {
		var err error
		tio, err = unix.IoctlGetTermios(fd, unix.TCGETS2)
		return err
	})
	if err != nil {
		return rfc2217.Settings{}, d.wrap("read termios", err)
	}
	return settingsFromTermios(tio), nil
}

func settingsFromTermios(tio *unix.Termios) rfc2217.Settings {
	s := rfc2217.Settings{Baud: tio.Ospeed, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone}
	if s.Baud == 0 {
		s.Baud = cbaudRate(tio.Cflag & (unix.CBAUD | unix.CBAUDEX))
	}
	switch tio.Cflag & unix.CSIZE {
	case unix.CS5:
		s.DataSize = 5
	case unix.CS6:
		s.DataSize = 6
	case unix.CS7:
		s.DataSize = 7
	default:
		s.DataSize = 8
	}
	if tio.Cflag&unix.PARENB != 0 {
		odd := tio.Cflag&unix.PARODD != 0
		switch {
		case tio.Cflag&unix.CMSPAR != 0 && odd:
			s.Parity = rfc2217.ParityMark
		case tio.Cflag&unix.CMSPAR != 0:
			s.Parity = rfc2217.ParitySpace
		case odd:
			s.Parity = rfc2217.ParityOdd
		default:
			s.Parity = rfc2217.ParityEven
		}
	}
	if tio.Cflag&unix.CSTOPB != 0 {
		s.StopSize = rfc2217.Stop2
		if s.DataSize == 5 {
			s.StopSize = rfc2217.Stop15
		}
	}
	switch {
	case tio.Cflag&unix.CRTSCTS != 0:
		s.Flow = rfc2217.FlowHardware
	case tio.Iflag&(unix.IXON|unix.IXOFF) != 0:
		s.Flow = rfc2217.FlowXONXOFF
	}
	return s
}

// cbaudRate decodes the standard Bnnn speeds, for drivers that leave
// c_ospeed at zero.
func cbaudRate(c uint32) uint32 {
	for _, r := range []struct{ b, rate uint32 }{
		{unix.B50, 50}, {unix.B75, 75}, {unix.B110, 110}, {unix.B134, 134}, {unix.B150, 150},
		{unix.B200, 200}, {unix.B300, 300}, {unix.B600, 600}, {unix.B1200, 1200}, {unix.B1800, 1800},
		{unix.B2400, 2400}, {unix.B4800, 4800}, {unix.B9600, 9600}, {unix.B19200, 19200},
		{unix.B38400, 38400}, {unix.B57600, 57600}, {unix.B115200, 115200}, {unix.B230400, 230400},
		{unix.B460800, 460800}, {unix.B500000, 500000}, {unix.B576000, 576000}, {unix.B921600, 921600},
		{unix.B1000000, 1000000}, {unix.B1152000, 1152000}, {unix.B1500000, 1500000},
		{unix.B2000000, 2000000}, {unix.B2500000, 2500000}, {unix.B3000000, 3000000},
		{unix.B3500000, 3500000}, {unix.B4000000, 4000000},
	} {
		if c == r.b {
			return r.rate
		}
	}
	return 0
}

func (d *serialDevice) setFlow(f rfc2217.FlowControl) error {
	err := d.control(func(fd int) error {
		tio, err := unix.IoctlGetTermios(fd, unix.TCGETS2)
		if err != nil {
			return err
		}
		tio.Cflag &^= unix.CRTSCTS
		tio.Iflag &^= unix.IXON | unix.IXOFF
		switch f {
		case rfc2217.FlowHardware:
			tio.Cflag |= unix.CRTSCTS
		case rfc2217.FlowXONXOFF:
			tio.Iflag |= unix.IXON | unix.IXOFF
		}
		return unix.IoctlSetTermios(fd, unix.TCSETS2, tio)
	})
	return d.wrap("set flow control", err)
}

// SetSettings applies the set fields of s and returns the settings read
// back from the tty. A speed or value the driver rejects is an error
// wrapping ErrBadSetting (the settings returned are still the truth).
// STOPSIZE 1.5 is applied only with 5 data bits; otherwise the stop bits
// are left as they are (logged) and the reply shows them.
func (d *serialDevice) SetSettings(_ context.Context, s rfc2217.Settings) (rfc2217.Settings, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, err := d.readback()
	if err != nil {
		return rfc2217.Settings{}, err
	}
	if err := validSettings(s); err != nil {
		return cur, fmt.Errorf("devices: serial %s: %w", d.path, err)
	}
	if s.Baud != 0 || s.DataSize != 0 || s.Parity != 0 || s.StopSize != 0 {
		want := s.Merge(cur)
		mode, ok15 := d.modeFor(want, cur)
		if !ok15 {
			d.log.Info("devices: 1.5 stop bits need 5 data bits; stop bits left as they are",
				"data_bits", want.DataSize, "stop_bits", cur.StopSize)
		}
		if err := d.port.SetMode(&mode); err != nil {
			got, _ := d.readback()
			return got, d.wrap("set "+want.String(), portErr(err))
		}
	}
	if s.Flow != 0 {
		if err := d.setFlow(s.Flow); err != nil {
			got, _ := d.readback()
			return got, err
		}
	}
	return d.readback()
}

func (d *serialDevice) SetDTR(_ context.Context, on bool) error {
	return d.modemErr("DTR", d.port.SetDTR(on))
}

func (d *serialDevice) SetRTS(_ context.Context, on bool) error {
	return d.modemErr("RTS", d.port.SetRTS(on))
}

// modemErr maps modem-line ioctl failures: a tty without modem lines (a
// pty says ENOTTY) does not support them; that is not a device fault.
func (d *serialDevice) modemErr(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case d.closed.Load():
		return d.wrap(what, err)
	case errors.Is(err, unix.ENOTTY), errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("devices: serial %s: %s: %w (%v)", d.path, what, rfc2217.ErrNotSupported, err)
	}
	return d.wrap(what, portErr(err))
}

// SetBreak sets or clears BREAK with TIOCSBRK/TIOCCBRK. (On a pty both
// succeed and do nothing observable.)
func (d *serialDevice) SetBreak(_ context.Context, on bool) error {
	req := uint(unix.TIOCCBRK)
	if on {
		req = unix.TIOCSBRK
	}
	err := d.control(func(fd int) error { return unix.IoctlSetInt(fd, req, 0) })
	return d.wrap("BREAK", err)
}

// Purge discards the tty's input (PurgeRX: data from the device not yet
// read) and/or output (PurgeTX: data not yet sent to the device) queues.
func (d *serialDevice) Purge(_ context.Context, what rfc2217.PurgeTarget) error {
	var err error
	switch what {
	case rfc2217.PurgeRX:
		err = d.port.ResetInputBuffer()
	case rfc2217.PurgeTX:
		err = d.port.ResetOutputBuffer()
	case rfc2217.PurgeBoth:
		err = errors.Join(d.port.ResetInputBuffer(), d.port.ResetOutputBuffer())
	default:
		return fmt.Errorf("devices: serial %s: invalid purge target %d", d.path, what)
	}
	return d.wrap("purge", portErr(err))
}

// ModemState returns CD, RI, DSR and CTS as they are now (no delta bits),
// or ErrNotSupported where the tty has no modem lines (ptys).
func (d *serialDevice) ModemState(context.Context) (rfc2217.ModemState, error) {
	bits, err := d.port.GetModemStatusBits()
	if err != nil {
		return 0, d.modemErr("modem state", err)
	}
	var m rfc2217.ModemState
	if bits.DCD {
		m |= rfc2217.ModemCD
	}
	if bits.RI {
		m |= rfc2217.ModemRI
	}
	if bits.DSR {
		m |= rfc2217.ModemDSR
	}
	if bits.CTS {
		m |= rfc2217.ModemCTS
	}
	return m, nil
}

// Read reads from the tty. go.bug.st/serial's quirks stop here: a (0, nil)
// read timeout is retried, its PortError becomes io.EOF when the tty went
// away (a pty whose other side closed) or a wrapped error.
func (d *serialDevice) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := d.port.Read(p)
		if err != nil {
			return n, d.readErr(err)
		}
		if n > 0 {
			return n, nil
		}
		if d.closed.Load() {
			return 0, d.wrap("read", net.ErrClosed)
		}
		// (0, nil): go.bug.st/serial's read timeout; we set none, but a
		// Read must not return it.
	}
}

func (d *serialDevice) readErr(err error) error {
	var pe *serial.PortError
	switch {
	case d.closed.Load():
		return d.wrap("read", err)
	case errors.As(err, &pe) && pe.Code() == serial.PortClosed:
		return io.EOF // the tty hung up (we did not close it)
	case errors.Is(err, unix.EIO), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return fmt.Errorf("devices: serial %s: read: %w (%w)", d.path, io.EOF, err)
	}
	return d.wrap("read", portErr(err))
}

// Write writes to the tty through the control descriptor (see
// serialDevice). It blocks while the tty's output queue is full (flow
// control); Close unblocks it.
func (d *serialDevice) Write(p []byte) (int, error) {
	n, err := d.ctl.Write(p)
	if err != nil {
		if errors.Is(err, os.ErrClosed) {
			err = net.ErrClosed
		}
		return n, d.wrap("write", err)
	}
	return n, nil
}

// Close closes both descriptors; a pending Read or Write returns an error
// wrapping ErrClosed. It is idempotent.
func (d *serialDevice) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		var errs []error
		if d.port != nil {
			errs = append(errs, d.port.Close())
		}
		errs = append(errs, d.ctl.Close())
		if err := errors.Join(errs...); err != nil {
			d.closeErr = fmt.Errorf("devices: serial %s: close: %w", d.path, portErr(err))
		}
	})
	return d.closeErr
}

// portErr gives go.bug.st/serial's *PortError (which has no Unwrap) an
// error chain callers can test: os.ErrNotExist, os.ErrPermission,
// syscall.EBUSY, ErrBadSetting, net.ErrClosed or rfc2217.ErrNotSupported.
func portErr(err error) error {
	var pe *serial.PortError
	if err == nil || !errors.As(err, &pe) {
		return err
	}
	var sentinel error
	switch pe.Code() {
	case serial.PortNotFound:
		sentinel = os.ErrNotExist
	case serial.PermissionDenied:
		sentinel = os.ErrPermission
	case serial.PortBusy:
		sentinel = syscall.EBUSY
	case serial.InvalidSpeed, serial.InvalidDataBits, serial.InvalidParity, serial.InvalidStopBits:
		sentinel = ErrBadSetting
	case serial.PortClosed:
		sentinel = net.ErrClosed
	case serial.FunctionNotImplemented:
		sentinel = rfc2217.ErrNotSupported
	default:
		return errors.New(pe.Error())
	}
	return fmt.Errorf("%s: %w", pe.Error(), sentinel)
}
