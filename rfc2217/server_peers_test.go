//go:build linux

package rfc2217_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/rfc2217/rfc2217test"
)

// serveRFC2217 listens on 127.0.0.1 and serves each client, one after the
// other, with rfc2217test.ServeConn (AccessServer + telnet codec) in front
// of port and dev. It returns the address; everything stops at cleanup.
func serveRFC2217(t *testing.T, port rfc2217.Port, dev rfc2217test.Device) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, _ := testLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			err = rfc2217test.ServeConn(ctx, conn, port, rfc2217test.ServerOptions{
				Logger: log, Device: dev, PollModem: 50 * time.Millisecond, Signature: "vspc-bridge-test",
			})
			if err != nil && ctx.Err() == nil {
				t.Logf("ServeConn: %v", err)
			}
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// echo copies everything read from rw back to it until rw is closed.
func echo(t *testing.T, rw io.ReadWriteCloser) {
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(rw, rw) })
	t.Cleanup(func() {
		rw.Close()
		wg.Wait()
	})
}

// runPyserial runs testdata/pyserial_client.py against addr. pyserial
// waits 3 s for each acknowledgement unless the URL says otherwise: a
// loaded machine must not turn a slow answer into a failure, so the URL
// gets timeout=30 (the script's own waits are as long).
func runPyserial(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	py := requirePyserial(t)
	if strings.Contains(url, "?") {
		url += "&timeout=30"
	} else {
		url += "?timeout=30"
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*testwait.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, append([]string{"testdata/pyserial_client.py", url}, args...)...)
	out, err := cmd.CombinedOutput()
	t.Logf("pyserial_client.py %s %s:\n%s", url, strings.Join(args, " "), out)
	return string(out), err
}

// pyserial's client, strict (no ign_set_control), against our access
// server in front of an in-memory port with modem lines that loop back
// (CTS follows RTS, DSR follows DTR): every acknowledgement must be right.
func TestAccessServerPyserialClient(t *testing.T) {
	port := rfc2217test.NewMemPort(rfc2217.Settings{Baud: 9600, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1, Flow: rfc2217.FlowNone})
	devServer, devTest := net.Pipe()
	echo(t, devTest)
	t.Cleanup(func() { devServer.Close() })
	addr := serveRFC2217(t, port, devServer)

	out, err := runPyserial(t, "rfc2217://"+addr, "19200", "7", "E", "1.5", "38400", "1", "20000")
	if err != nil || !strings.Contains(out, "\nOK\n") {
		t.Fatalf("pyserial client failed: %v", err)
	}
	if got := port.Current().String(); got != "38400 7E1.5" {
		t.Errorf("port settings %q, want 38400 7E1.5", got)
	}
	calls := strings.Join(port.Calls(), "\n")
	for _, want := range []string{"SetDTR false", "SetRTS false", "SetDTR true", "SetRTS true", "SetBreak true", "SetBreak false", "Purge rx", "Purge tx"} {
		if !strings.Contains(calls, want) {
			t.Errorf("port never saw %q; calls:\n%s", want, calls)
		}
	}
}

// pyserial's client against our access server in front of a real tty (one
// end of a socat pty pair): the speed and stop bits it sets are on the
// tty, and data crosses 8-bit clean. A pty cannot do modem lines, so the
// URL carries ?ign_set_control (pyserial does not wait for SET-CONTROL
// acks); the server still answers them with the state in effect.
func TestAccessServerPyserialClientPty(t *testing.T) {
	ttyA, ttyB := socatPair(t)
	port := openTermiosPort(t, ttyA)
	dev := openRaw(t, ttyA)
	echo(t, openRaw(t, ttyB))
	addr := serveRFC2217(t, port, dev)

	out, err := runPyserial(t, "rfc2217://"+addr+"?ign_set_control", "19200", "8", "N", "2", "57600", "0", "20000")
	if err != nil || !strings.Contains(out, "\nOK\n") {
		t.Fatalf("pyserial client failed: %v", err)
	}
	tio := ttyTermios(t, ttyA)
	if tio.Ospeed != 57600 || tio.Cflag&unix.CSTOPB == 0 {
		t.Errorf("pty: ospeed %d cstopb %v, want 57600 with 2 stop bits", tio.Ospeed, tio.Cflag&unix.CSTOPB != 0)
	}
}

// The truth, even when it disappoints: a Linux pty forces 8 data bits and
// no parity, so asked for 7E1 the server answers 8 (and N), and strict
// pyserial refuses to open ("remote rejected value for option 'datasize'").
func TestAccessServerPyserialClientPtyRejectsParity(t *testing.T) {
	ttyA, _ := socatPair(t)
	port := openTermiosPort(t, ttyA)
	dev := openRaw(t, ttyA)
	addr := serveRFC2217(t, port, dev)
	out, err := runPyserial(t, "rfc2217://"+addr+"?ign_set_control", "9600", "7", "E", "1", "9600", "0", "10")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(out, "remote rejected value for option 'datasize'") {
		t.Fatalf("pyserial accepted 7E1 on a pty (err %v)", err)
	}
	if s, _ := port.SetSettings(context.Background(), rfc2217.Settings{}); s.DataSize != 8 || s.Parity != rfc2217.ParityNone {
		t.Errorf("pty reads back %v", s)
	}
}
