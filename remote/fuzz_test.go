package remote

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// recordSink is a VM port that records what clients send it.
type recordSink struct {
	mu     sync.Mutex
	data   []byte
	breaks int
}

func (s *recordSink) Send(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data = append(s.data, p...)
	return nil
}

func (s *recordSink) SendBreak() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.breaks++
	return nil
}

func (s *recordSink) got() (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.data), s.breaks
}

const fuzzPassword = "fuzz-pw"

// fuzzConfig is a hub config for the front door fuzz target: one user,
// no login delay, and (with open) no login at all.
func fuzzConfig(tb testing.TB, open bool) *configs.Config {
	tb.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(fuzzPassword), bcrypt.MinCost)
	if err != nil {
		tb.Fatal(err)
	}
	cfg, err := configs.Parse("fuzz.toml", fmt.Appendf(nil, `[vspc]
listen = "127.0.0.1:0"
[remote]
enabled = true
open = %v
login_delay = "0s"
login_max_failures = 4
[[user]]
name = "alice"
password = %q
access = [{vm = "web-*", mode = "rw"}, {vm = "*", mode = "ro"}]
`, open, h))
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// FuzzFrontDoor feeds arbitrary operator bytes to a telnet session from
// its first byte: telnet negotiation, the login and password prompts,
// the front door menu, and (kind 2) a per-VM port. Properties: the
// session ends when its input does, nobody logs in without the password,
// nothing reaches a VM before a login (or on an open listener), and the
// output stays proportional to the input.
func FuzzFrontDoor(f *testing.F) {
	iac := func(b ...byte) string { return string(b) }
	seeds := []struct {
		in   string
		kind uint8
	}{
		{"alice\r\n" + fuzzPassword + "\r\n", 0},
		{"alice\r\n" + fuzzPassword + "\r\n1\r\nhello\x05cw\x05c.q\r\n", 0},
		{"alice\r\n" + fuzzPassword + "\r\nweb-1 xw\r\nx\x05cs\x05ca\x05cb\x05c?\x05c.quit\r\n", 0},
		{"alice\r\nwrong\r\nbob\r\nx\r\nalice\r\nagain\r\n", 0},
		{"\r\n\r\n\x15\x7f\x08\x03", 0},
		{iac(255, 253, 1, 255, 251, 3, 255, 254, 0, 255, 250, 24, 1, 255, 240) + "alice\r\x00" + fuzzPassword + "\r\x00", 0},
		{iac(255, 244, 255, 243, 255, 246, 255, 247, 255, 248) + "ali\x7fice\r\n", 0},
		{"2 ro\r\nxyz\x05c.\r\n3\r\nq\r\n", 1},
		{"web-1/web-1 x\r\ndata\xff\xff" + iac(255, 243) + "\x04", 1},
		{"alice\r\n" + fuzzPassword + "\r\ntyped\r\n\x05c.", 2},
		{"alice\n" + fuzzPassword + "\n" + iac(255, 250, 255, 255, 240), 2},
	}
	for _, s := range seeds {
		f.Add([]byte(s.in), s.kind)
	}
	cfgs := [2]*configs.Config{fuzzConfig(f, false), fuzzConfig(f, true)}
	f.Fuzz(func(t *testing.T, in []byte, kind uint8) {
		kind %= 3
		cfg := cfgs[0]
		if kind == 1 {
			cfg = cfgs[1]
		}
		h, err := New(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		var sinks []*recordSink
		var cons []*console
		for _, name := range []string{"web-1", "db-1", "web-1"} {
			sink := &recordSink{}
			b, err := h.Open(context.Background(), vspc.Request{Direction: vspc.DirServer, ServiceURI: name + fmt.Sprint(len(sinks)), VMName: name}, sink)
			if err != nil {
				t.Fatal(err)
			}
			b.Write([]byte("boot\xff output\r\n"))
			sinks, cons = append(sinks, sink), append(cons, b.(*console))
		}
		var con *console
		if kind == 2 {
			con = cons[0]
		}
		server, client := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.serveTelnet(context.Background(), server, false, con, func() {}, func() {})
		}()
		var out atomic.Int64
		read := make(chan struct{})
		go func() {
			defer close(read)
			n, _ := io.Copy(io.Discard, client)
			out.Store(n)
		}()
		client.Write(in) // fails once the session has ended by itself
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("the session did not end after its input did")
		}
		<-read
		// Line editing only removes bytes, so a login needs the password
		// as a subsequence of the input.
		typed := subsequence(in, []byte(fuzzPassword))
		if !typed && h.Counters().Logins != 0 {
			t.Fatalf("logged in without the password: %q", in)
		}
		if kind != 1 && !typed {
			for i, s := range sinks {
				if n, brk := s.got(); n != 0 || brk != 0 {
					t.Fatalf("console %d got %d bytes and %d BREAKs from a user who never logged in", i, n, brk)
				}
			}
		}
		if limit := int64(64<<10 + 1024*len(in)); out.Load() > limit {
			t.Fatalf("%d bytes of output for %d bytes of input", out.Load(), len(in))
		}
		for _, c := range cons {
			if n := len(c.info().Clients); n != 0 {
				t.Fatalf("%d clients still attached after the session ended", n)
			}
		}
	})
}

// subsequence reports whether the bytes of sub appear in b in order.
func subsequence(b, sub []byte) bool {
	for _, c := range b {
		if len(sub) > 0 && c == sub[0] {
			sub = sub[1:]
		}
	}
	return len(sub) == 0
}

// FuzzLoginAndServiceURI: splitLogin (SSH "user+vm") and parseServiceURI
// (a VM's service URI) take untrusted strings. splitLogin loses nothing
// and its user has no '+'; parseServiceURI either fails naming the URI or
// gives a known scheme and a port in 0..65535 (0: none named).
func FuzzLoginAndServiceURI(f *testing.F) {
	for _, s := range []string{"alice+web-1", "alice", "+", "a+b+c", "telnet://h:7001", "telnets://h:1", "tcp://[::1]:65535",
		"vSPC.py", "web-1?port=com2", "telnet://h:0", "telnet://h:99999", "TELNET://h:7", "telnet://h:-1", "telnet://h:+1", "%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		user, target := splitLogin(s)
		if strings.Contains(user, "+") {
			t.Fatalf("splitLogin(%q): user %q has a '+'", s, user)
		}
		if joined := user + "+" + target; (strings.Contains(s, "+") && joined != s) || (!strings.Contains(s, "+") && (user != s || target != "")) {
			t.Fatalf("splitLogin(%q) = %q, %q", s, user, target)
		}
		spec, err := parseServiceURI(s, schemeTelnet)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "remote: service URI ") || !strings.Contains(err.Error(), fmt.Sprintf("%q", s)) {
				t.Fatalf("parseServiceURI(%q): error %q does not name the URI", s, err)
			}
			return
		}
		switch spec.scheme {
		case schemeTelnet, schemeTelnets, schemeTCP:
		default:
			t.Fatalf("parseServiceURI(%q): scheme %q", s, spec.scheme)
		}
		if spec.port < 0 || spec.port > 65535 {
			t.Fatalf("parseServiceURI(%q): port %d", s, spec.port)
		}
	})
}
