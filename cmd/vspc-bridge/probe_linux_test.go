package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vspc-bridge/vspc-bridge/aspp"
	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
)

// runProbe runs "vspc-bridge probe args…" and returns the exit code and
// what it printed.
func runProbe(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), append([]string{"probe"}, args...), nil, &out, &errb)
	return code, out.String(), errb.String()
}

func probeJSON(t *testing.T, args ...string) (int, probeReport) {
	t.Helper()
	code, out, errs := runProbe(t, append([]string{"-json"}, args...)...)
	var rep probeReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("probe %q: exit %d, output %q, stderr %q: %v", args, code, out, errs, err)
	}
	return code, rep
}

// echoOnce answers the first "ping\r" read from the tty with "pong".
func echoOnce(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	go func() {
		var got []byte
		buf := make([]byte, 64)
		for !bytes.Contains(got, []byte("ping\r")) {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			got = append(got, buf[:n]...)
		}
		f.Write([]byte("pong"))
	}()
}

func TestProbeSerial(t *testing.T) {
	a, b := devicetest.SocatPTY(t)
	echoOnce(t, b)
	code, rep := probeJSON(t, "-settings", "57600 8N2", "-send", `ping\r`, "-until", "pong", "-wait", "1m", a)
	if code != 0 || !rep.Connected || rep.Kind != "serial" || !rep.LineControl || rep.Settings != "57600 8N2" {
		t.Errorf("exit %d, %+v", code, rep)
	}
	if rep.Received != 4 || rep.Sample != `"pong"` {
		t.Errorf("received %d %s", rep.Received, rep.Sample)
	}
	if s := devicetest.TTY(t, a); s.Speed != 57600 || s.StopBits != 2 {
		t.Errorf("the tty has %+v", s)
	}
	// A pty cannot take 7 data bits: the settings were not taken, exit 1.
	code, rep = probeJSON(t, "-settings", "9600 7E1", "-wait", "0s", a)
	if code != 1 || rep.Mismatch == "" || rep.Settings != "9600 8N1" {
		t.Errorf("7E1 on a pty: exit %d, %+v", code, rep)
	}
}

func TestProbeUnreachable(t *testing.T) {
	port := devicetest.FreePort(t)
	code, out, _ := runProbe(t, "tcp://127.0.0.1:"+strconv.Itoa(port))
	if code != 1 || !strings.Contains(out, "connected    no: ") || !strings.Contains(out, "connection refused") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestProbeUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		err  string
	}{
		{nil, 2, "usage: vspc-bridge probe"},
		{[]string{"-h"}, 0, "usage: vspc-bridge probe"},
		{[]string{"foo://x"}, 1, `unknown scheme "foo"`},
		{[]string{"-settings", "9600 9N1", "tcp://127.0.0.1:1"}, 1, "-settings"},
		{[]string{"-send", `\q`, "tcp://127.0.0.1:1"}, 1, `unknown escape \q`},
		{[]string{"-until", `\x4`, "tcp://127.0.0.1:1"}, 1, `\x needs two hex digits`},
	} {
		code, _, errs := runProbe(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.err) {
			t.Errorf("probe %q: exit %d, stderr %q; want %d and %q", c.args, code, errs, c.code, c.err)
		}
	}
}

func TestProbeRFC2217(t *testing.T) {
	a, _ := devicetest.SocatPTY(t)
	addr := devicetest.Ser2net(t, "telnet(rfc2217)", a)
	code, out, errs := runProbe(t, "-settings", "19200 8N1", "-wait", "0s", "rfc2217://"+addr)
	if code != 0 {
		t.Fatalf("exit %d:\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"kind         rfc2217 at " + addr, "line control yes", "settings     19200 8N1", "server signature: ser2net", "modem lines "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// (Not the tty afterwards: ser2net closes it when the probe leaves,
	// and a pty nobody holds forgets its settings.)
}

func TestProbeTCPAndTelnet(t *testing.T) {
	a, b := devicetest.SocatPTY(t)
	echoOnce(t, b)
	addr := devicetest.SocatTCPServer(t, a)
	code, rep := probeJSON(t, "-settings", "9600 8N1", "-send", `ping\r`, "-until", "pong", "-wait", "1m", "tcp://"+addr)
	if code != 0 || rep.LineControl || rep.Settings != "9600 8N1" || rep.Sample != `"pong"` {
		t.Errorf("tcp: exit %d, %+v", code, rep)
	}
	code, rep = probeJSON(t, "-wait", "0s", "telnet://"+devicetest.TelnetdEcho(t))
	if code != 0 || rep.LineControl || rep.Settings != "" || !strings.Contains(strings.Join(rep.Notes, "\n"), "telnet: to the device") {
		t.Errorf("telnet: exit %d, %+v", code, rep)
	}
}

func TestProbeNPort(t *testing.T) {
	sim := devicetest.StartNPort(t, devicetest.NPortOptions{Modem: aspp.Modem{DCD: true, DSR: true, CTS: true}})
	_, cmd, _ := net.SplitHostPort(sim.CmdAddr)
	uri := "nport://" + sim.DataAddr + "?cmd=" + cmd
	code, out, errs := runProbe(t, "-settings", "57600 7E2", "-wait", "0s", uri)
	if code != 0 {
		t.Fatalf("exit %d:\n%s\n%s", code, out, errs)
	}
	for _, want := range []string{"command port " + sim.CmdAddr, "line control yes", "settings     57600 7E2", "modem lines  CD DSR CTS -RI"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if st := sim.State(); st.Baud != 57600 || st.Mode.String() != "7E2" {
		t.Errorf("the NPort has %+v", st.NPortLine)
	}
	// Without -settings nothing is sent, and nothing is claimed.
	code, rep := probeJSON(t, "-wait", "0s", uri)
	if code != 0 || !rep.LineControl || rep.Settings != "" || rep.Modem != "" {
		t.Errorf("without -settings: exit %d, %+v", code, rep)
	}
	// The command port closed: data only, and the report says why.
	off := devicetest.StartNPort(t, devicetest.NPortOptions{NoCommandPort: true})
	_, closed, _ := net.SplitHostPort(off.CmdAddr)
	code, rep = probeJSON(t, "-settings", "9600 8N1", "-wait", "0s", "nport://"+off.DataAddr+"?cmd="+closed)
	if code != 0 || rep.LineControl || rep.Settings != "9600 8N1" || !strings.Contains(strings.Join(rep.Notes, "\n"), "Allow driver control") {
		t.Errorf("closed command port: exit %d, %+v", code, rep)
	}
}
