//go:build linux

package rfc2217_test

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

var update = flag.Bool("update", false, "re-record testdata/*.dialogue from the real peers")

// A dialogue is what crossed one client connection, as flows: maximal runs
// of bytes in one direction, in the order they were seen by the client.
type flow struct {
	toServer bool
	data     []byte
}

// recordingConn records a Client's connection as flows.
type recordingConn struct {
	net.Conn
	mu    sync.Mutex
	flows []flow
}

func (r *recordingConn) add(toServer bool, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.flows); n > 0 && r.flows[n-1].toServer == toServer {
		r.flows[n-1].data = append(r.flows[n-1].data, p...)
		return
	}
	r.flows = append(r.flows, flow{toServer, append([]byte(nil), p...)})
}

func (r *recordingConn) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.add(false, p[:n])
	return n, err
}

// Write records before writing, so that a reply can never be recorded
// ahead of the request that caused it.
func (r *recordingConn) Write(p []byte) (int, error) {
	r.add(true, p)
	return r.Conn.Write(p)
}

func writeDialogue(t *testing.T, path, header string, flows []flow) {
	t.Helper()
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(header), "\n") {
		fmt.Fprintf(&b, "# %s\n", l)
	}
	for i, f := range flows {
		if len(f.data) == 0 {
			continue
		}
		dir := "server to client"
		if f.toServer {
			dir = "client to server"
		}
		fmt.Fprintf(&b, "\n>>> Flow %d (%s)\n%s", i+1, dir, hex.Dump(f.data))
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readDialogue(t *testing.T, path string) []flow {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var flows []flow
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, ">>> Flow"):
			flows = append(flows, flow{toServer: strings.Contains(line, "(client to server)")})
		default: // hex.Dump: offset, 16 bytes in two groups of 8, |ascii|
			if len(flows) == 0 || len(line) < 10 {
				t.Fatalf("%s: stray line %q", path, line)
			}
			hexPart := line[10:]
			if i := strings.Index(hexPart, "|"); i >= 0 {
				hexPart = hexPart[:i]
			}
			b, err := hex.DecodeString(strings.Join(strings.Fields(hexPart), ""))
			if err != nil {
				t.Fatalf("%s: %q: %v", path, line, err)
			}
			flows[len(flows)-1].data = append(flows[len(flows)-1].data, b...)
		}
	}
	return flows
}

// replay plays the server side of flows on conn: it writes each server
// flow and reads each client flow, failing on the first differing byte.
func replay(t *testing.T, conn net.Conn, flows []flow) {
	t.Helper()
	defer conn.Close()
	var sent int // bytes the client has sent so far, for error messages
	for i, f := range flows {
		if !f.toServer {
			if _, err := conn.Write(f.data); err != nil {
				t.Errorf("flow %d: write: %v", i+1, err)
				return
			}
			continue
		}
		got := make([]byte, len(f.data))
		n, err := io.ReadFull(conn, got)
		for j := 0; j < n; j++ {
			if got[j] != f.data[j] {
				t.Errorf("flow %d (client to server): first difference at byte %d (stream offset %d): got %#02x, want %#02x\n got % x\nwant % x",
					i+1, j, sent+j, got[j], f.data[j], got[:n], f.data)
				return
			}
		}
		if err != nil {
			t.Errorf("flow %d: client sent %d of %d bytes: %v", i+1, n, len(f.data), err)
			return
		}
		sent += n
	}
}

// dialogueScenario is what the client does in every recorded dialogue.
type dialogueScenario struct {
	fromDevice []byte // what the far end writes to the serial line
}

// run drives a Client over conn; device, when set, is called once the
// client has written its data (recording: write to the far pty end).
func (s dialogueScenario) run(t *testing.T, conn net.Conn, device func()) (settings []rfc2217.Settings) {
	t.Helper()
	c, err := rfc2217.NewClient(t.Context(), conn, rfc2217.ClientOptions{
		AckTimeout: 300 * time.Millisecond,
		Initial:    rfc2217.Settings{Baud: 57600, StopSize: rfc2217.Stop2},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	settings = append(settings, c.Settings())
	s2, err := c.SetSettings(t.Context(), rfc2217.Settings{Baud: 115200})
	if err != nil {
		t.Fatal(err)
	}
	settings = append(settings, s2)
	if err := c.SetDTR(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello\xff")); err != nil {
		t.Fatal(err)
	}
	if device != nil {
		device()
	}
	got, err := readN(c, len(s.fromDevice))
	if err != nil || !bytes.Equal(got, s.fromDevice) {
		t.Errorf("from device: %q %v", got, err)
	}
	return settings
}

// Recorded dialogues with real access servers (re-record with -update),
// replayed against the Client byte for byte.
func TestClientDialogues(t *testing.T) {
	sc := dialogueScenario{fromDevice: []byte("world\xff\x00")}
	for _, tt := range []struct {
		file  string
		peer  string
		start func(t *testing.T, tty string) string
		want  []string // Settings after NewClient, after SetSettings 115200
	}{
		{"ser2net-4.3.11-client.dialogue", "ser2net 4.3.11 (Debian 12), telnet(rfc2217) accepter on a socat pty", startSer2net,
			[]string{"57600 8N2", "115200 8N2"}},
		{"sredird-2.2.1-client.dialogue", "sredird 2.2.1 (Debian 12) under socat TCP-LISTEN EXEC, on a socat pty", startSredird,
			[]string{"57600 8N2", "115200 8N2"}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			var got []rfc2217.Settings
			if *update {
				ttyA, ttyB := socatPair(t)
				addr := tt.start(t, ttyA)
				rc := &recordingConn{Conn: dial(t, addr)}
				dev := openRaw(t, ttyB)
				got = sc.run(t, rc, func() {
					if b, err := readN(deadlineReader{dev}, len("hello\xff")); err != nil || string(b) != "hello\xff" {
						t.Errorf("device got %q %v", b, err)
					}
					dev.Write(sc.fromDevice)
				})
				rc.mu.Lock()
				flows := rc.flows
				rc.mu.Unlock()
				writeDialogue(t, path, fmt.Sprintf(
					"Recorded from %s by TestClientDialogues -update.\n"+
						"Scenario: NewClient (Initial 57600, 2 stop bits; other fields queried), SetSettings 115200,\n"+
						"SetDTR on (AckTimeout 300 ms), write \"hello\\xff\", the far pty end writes %q.", tt.peer, sc.fromDevice), flows)
			} else {
				flows := readDialogue(t, path)
				synctest.Test(t, func(t *testing.T) {
					cconn, sconn := net.Pipe()
					done := make(chan struct{})
					go func() { defer close(done); replay(t, sconn, flows) }()
					got = sc.run(t, cconn, nil)
					<-done
				})
			}
			for i, w := range tt.want {
				if i >= len(got) || got[i].String() != w {
					t.Errorf("settings %d: %v, want %s", i, got, w)
				}
			}
		})
	}
}
