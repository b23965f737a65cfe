//go:build linux

package rfc2217_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

// termiosPort is a test-only rfc2217.Port over a tty path using termios
// directly (TCGETS2/TCSETS2, so any baud rate works through BOTHER). It
// reports what the tty reads back: on a Linux pty that is always 8 data
// bits and no parity, and modem-line ioctls fail (ErrNotSupported).
type termiosPort struct {
	mu sync.Mutex
	fd int
}

func openTermiosPort(t *testing.T, path string) *termiosPort {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &termiosPort{fd: fd}
}

func (p *termiosPort) SetSettings(ctx context.Context, s rfc2217.Settings) (rfc2217.Settings, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	tio, err := unix.IoctlGetTermios(p.fd, unix.TCGETS2)
	if err != nil {
		return rfc2217.Settings{}, fmt.Errorf("termios: %w", err)
	}
	if s != (rfc2217.Settings{}) {
		if s.Baud != 0 {
			tio.Cflag = tio.Cflag&^unix.CBAUD | unix.BOTHER
			tio.Ispeed, tio.Ospeed = s.Baud, s.Baud
		}
		if s.DataSize != 0 {
			tio.Cflag = tio.Cflag&^unix.CSIZE | map[uint8]uint32{5: unix.CS5, 6: unix.CS6, 7: unix.CS7, 8: unix.CS8}[s.DataSize]
		}
		switch s.Parity {
		case rfc2217.ParityNone:
			tio.Cflag &^= unix.PARENB | unix.PARODD | unix.CMSPAR
		case rfc2217.ParityOdd:
			tio.Cflag = tio.Cflag&^unix.CMSPAR | unix.PARENB | unix.PARODD
		case rfc2217.ParityEven:
			tio.Cflag = tio.Cflag&^(unix.CMSPAR|unix.PARODD) | unix.PARENB
		case rfc2217.ParityMark:
			tio.Cflag |= unix.PARENB | unix.PARODD | unix.CMSPAR
		case rfc2217.ParitySpace:
			tio.Cflag = tio.Cflag&^unix.PARODD | unix.PARENB | unix.CMSPAR
		}
		switch s.StopSize {
		case rfc2217.Stop1:
			tio.Cflag &^= unix.CSTOPB
		case rfc2217.Stop2, rfc2217.Stop15: // a UART sends 1.5 for CS5+CSTOPB
			tio.Cflag |= unix.CSTOPB
		}
		switch s.Flow {
		case rfc2217.FlowNone:
			tio.Cflag &^= unix.CRTSCTS
			tio.Iflag &^= unix.IXON | unix.IXOFF
		case rfc2217.FlowXONXOFF:
			tio.Cflag &^= unix.CRTSCTS
			tio.Iflag |= unix.IXON | unix.IXOFF
		case rfc2217.FlowHardware:
			tio.Cflag |= unix.CRTSCTS
			tio.Iflag &^= unix.IXON | unix.IXOFF
		}
		if err := unix.IoctlSetTermios(p.fd, unix.TCSETS2, tio); err != nil {
			return rfc2217.Settings{}, fmt.Errorf("termios: %w", err)
		}
		if tio, err = unix.IoctlGetTermios(p.fd, unix.TCGETS2); err != nil {
			return rfc2217.Settings{}, fmt.Errorf("termios: %w", err)
		}
	}
	return settingsOf(tio), nil
}

func settingsOf(tio *unix.Termios) rfc2217.Settings {
	s := rfc2217.Settings{Baud: tio.Ospeed, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone}
	s.DataSize = map[uint32]uint8{unix.CS5: 5, unix.CS6: 6, unix.CS7: 7, unix.CS8: 8}[tio.Cflag&unix.CSIZE]
	if tio.Cflag&unix.PARENB != 0 {
		switch odd, mark := tio.Cflag&unix.PARODD != 0, tio.Cflag&unix.CMSPAR != 0; {
		case mark && odd:
			s.Parity = rfc2217.ParityMark
		case mark:
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
	case tio.Iflag&unix.IXON != 0:
		s.Flow = rfc2217.FlowXONXOFF
	}
	return s
}

func (p *termiosPort) modemBits(req uint, bits int) error {
	if err := unix.IoctlSetPointerInt(p.fd, req, bits); err != nil {
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("modem lines: %w (%v)", rfc2217.ErrNotSupported, err)
		}
		return err
	}
	return nil
}

func (p *termiosPort) SetDTR(ctx context.Context, on bool) error {
	return p.modemBits(pickReq(on), unix.TIOCM_DTR)
}

func (p *termiosPort) SetRTS(ctx context.Context, on bool) error {
	return p.modemBits(pickReq(on), unix.TIOCM_RTS)
}

func pickReq(on bool) uint {
	if on {
		return unix.TIOCMBIS
	}
	return unix.TIOCMBIC
}

func (p *termiosPort) SetBreak(ctx context.Context, on bool) error {
	req := uint(unix.TIOCCBRK)
	if on {
		req = unix.TIOCSBRK
	}
	return unix.IoctlSetInt(p.fd, req, 0)
}

func (p *termiosPort) Purge(ctx context.Context, what rfc2217.PurgeTarget) error {
	q := map[rfc2217.PurgeTarget]int{rfc2217.PurgeRX: unix.TCIFLUSH, rfc2217.PurgeTX: unix.TCOFLUSH, rfc2217.PurgeBoth: unix.TCIOFLUSH}[what]
	return unix.IoctlSetInt(p.fd, unix.TCFLSH, q)
}

func (p *termiosPort) ModemState(ctx context.Context) (rfc2217.ModemState, error) {
	bits, err := unix.IoctlGetInt(p.fd, unix.TIOCMGET)
	if err != nil {
		return 0, fmt.Errorf("modem lines: %w (%v)", rfc2217.ErrNotSupported, err)
	}
	var m rfc2217.ModemState
	for bit, ms := range map[int]rfc2217.ModemState{unix.TIOCM_CD: rfc2217.ModemCD, unix.TIOCM_RI: rfc2217.ModemRI, unix.TIOCM_DSR: rfc2217.ModemDSR, unix.TIOCM_CTS: rfc2217.ModemCTS} {
		if bits&bit != 0 {
			m |= ms
		}
	}
	return m, nil
}

var _ rfc2217.Port = (*termiosPort)(nil)
