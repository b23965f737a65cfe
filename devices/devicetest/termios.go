//go:build linux

package devicetest

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// TTYState is the part of a tty's termios a test can check.
type TTYState struct {
	Speed    uint32 // output speed in baud (TCGETS2 c_ospeed)
	StopBits int    // 1, or 2 with CSTOPB
	DataBits int    // from CSIZE (a pty always reads back 8)
	Parity   bool   // PARENB (a pty always reads back false)
	CRTSCTS  bool
	IXON     bool
	IXOFF    bool
}

// ReadTTY opens path (non-blocking, no controlling tty) and reads its
// termios. Termios belongs to the tty, so this shows what whoever else
// has it open set.
func ReadTTY(path string) (TTYState, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return TTYState{}, fmt.Errorf("devicetest: open %s: %w", path, err)
	}
	defer unix.Close(fd)
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS2)
	if err != nil {
		return TTYState{}, fmt.Errorf("devicetest: TCGETS2 %s: %w", path, err)
	}
	s := TTYState{
		Speed:    tio.Ospeed,
		StopBits: 1,
		Parity:   tio.Cflag&unix.PARENB != 0,
		CRTSCTS:  tio.Cflag&unix.CRTSCTS != 0,
		IXON:     tio.Iflag&unix.IXON != 0,
		IXOFF:    tio.Iflag&unix.IXOFF != 0,
	}
	if tio.Cflag&unix.CSTOPB != 0 {
		s.StopBits = 2
	}
	switch tio.Cflag & unix.CSIZE {
	case unix.CS5:
		s.DataBits = 5
	case unix.CS6:
		s.DataBits = 6
	case unix.CS7:
		s.DataBits = 7
	default:
		s.DataBits = 8
	}
	return s, nil
}

// TTY is ReadTTY that fails the test on error.
func TTY(t testing.TB, path string) TTYState {
	t.Helper()
	s, err := ReadTTY(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
