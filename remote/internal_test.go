package remote

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// TestEscaper: the escape sequence split anywhere, partial sequences
// that turn out to be data, and the literal escape.
func TestEscaper(t *testing.T) {
	seq := []byte{0x05, 'c'} // ^Ec
	tests := []struct {
		name   string
		chunks []string
		data   string
		cmds   string
	}{
		{"plain", []string{"hello"}, "hello", ""},
		{"detach", []string{"ab\x05c.cd"}, "ab", "."},
		{"split", []string{"ab\x05", "c", "b", "xy"}, "abxy", "b"},
		{"partial is data", []string{"a\x05", "d"}, "a\x05d", ""},
		{"partial then seq", []string{"\x05\x05cw"}, "\x05", "w"},
		{"literal", []string{"\x05cc"}, "\x05c", ""},
		{"two commands", []string{"\x05cw\x05c?z"}, "z", "w?"},
		{"held at end", []string{"x\x05"}, "x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := escaper{seq: seq}
			var data, cmds []byte
			for _, ch := range tt.chunks {
				e.feed([]byte(ch), func(p []byte) { data = append(data, p...) }, func(c byte) bool {
					cmds = append(cmds, c)
					return c != '.'
				})
			}
			if string(data) != tt.data || string(cmds) != tt.cmds {
				t.Fatalf("data %q cmds %q, want %q %q", data, cmds, tt.data, tt.cmds)
			}
		})
	}
}

// FuzzEscaper: without the full sequence, input comes out unchanged; and
// the escaper never loses or invents bytes beyond the commands.
func FuzzEscaper(f *testing.F) {
	f.Add([]byte("ab\x05c.cd"), 3)
	f.Add([]byte("\x05\x05\x05cc"), 1)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		e := escaper{seq: []byte{0x05, 'c'}}
		var out []byte
		ncmd := 0
		if split < 0 || split > len(in) {
			split = len(in) / 2
		}
		for _, ch := range [][]byte{in[:split], in[split:]} {
			e.feed(ch, func(p []byte) { out = append(out, p...) }, func(byte) bool { ncmd++; return true })
		}
		held := e.n
		if e.cmd {
			held = 2
		}
		if !bytes.Contains(in, []byte{0x05, 'c'}) && !bytes.Equal(append(out, in[len(in)-held:]...), in) {
			t.Fatalf("in %q out %q held %d", in, out, held)
		}
		if len(out) > len(in) {
			t.Fatalf("out %q longer than in %q", out, in)
		}
	})
}

// TestRing: the scrollback keeps the last max bytes whatever the write
// sizes, growing only as output arrives.
func TestRing(t *testing.T) {
	r := ring{max: 8}
	if r.buf != nil {
		t.Fatal("buffer before any output")
	}
	r.write([]byte("abc"))
	if got := string(r.appendTo(nil)); got != "abc" {
		t.Fatal(got)
	}
	r.write([]byte("defgh"))
	if got := string(r.appendTo(nil)); got != "abcdefgh" {
		t.Fatal(got)
	}
	r.write([]byte("ij"))
	if got := string(r.appendTo(nil)); got != "cdefghij" {
		t.Fatal(got)
	}
	r.write([]byte("0123456789"))
	if got := string(r.appendTo(nil)); got != "23456789" {
		t.Fatal(got)
	}
	var z ring
	z.write([]byte("x"))
	if len(z.appendTo(nil)) != 0 {
		t.Fatal("zero ring kept data")
	}
	// Against a plain "last max bytes" model, with writes of every size.
	for _, max := range []int{1, 7, 300, 1000} {
		r := ring{max: max}
		var all []byte
		for i := range 200 {
			p := bytes.Repeat([]byte{byte(i)}, (i*37)%(2*max+3))
			r.write(p)
			all = append(all, p...)
			want := all[len(all)-min(len(all), max):]
			if got := r.appendTo(nil); !bytes.Equal(got, want) {
				t.Fatalf("max %d, write %d: got %d bytes, want %d", max, i, len(got), len(want))
			}
			if cap(r.buf) > max {
				t.Fatalf("max %d: buffer of %d", max, cap(r.buf))
			}
		}
	}
}

// TestLogWriterLosesNotBlocks: with the writer stalled (a slow disk),
// output beyond log_buffer is counted as lost, and the file marks it.
func TestLogWriterLosesNotBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	l, err := newLogWriter(path, 1<<20, 2, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.Repeat([]byte("a"), 60<<10)
	l.write(first)                             // fits
	l.write(bytes.Repeat([]byte("b"), 10<<10)) // does not: lost
	if got := l.lostTotal.Load(); got != 10<<10 {
		t.Fatalf("lost %d", got)
	}
	l.close()
	if err := l.run(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, first) || !strings.Contains(string(b[len(first):]), "10240 bytes of console output lost from this log") {
		t.Fatalf("file: %q…", b[len(first):])
	}
}

// gateWriter is a connection that takes one Write at a time when told:
// each Write is reported on got and returns once release gets a value.
type gateWriter struct {
	got     chan []byte
	release chan struct{}
	mu      sync.Mutex
	all     []byte
}

func newGateWriter() *gateWriter {
	return &gateWriter{got: make(chan []byte, 100), release: make(chan struct{})}
}

func (g *gateWriter) Write(p []byte) (int, error) {
	g.got <- append([]byte(nil), p...)
	<-g.release
	g.mu.Lock()
	g.all = append(g.all, p...)
	g.mu.Unlock()
	return len(p), nil
}

func (g *gateWriter) written() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return string(g.all)
}

// TestOutQueueDrops: in drop mode, output past the limit drops the
// client: the chunk being written still goes out, then the message
// instead of the rest.
func TestOutQueueDrops(t *testing.T) {
	g := newGateWriter()
	o := newOutQueue(g, 10, nil, nil)
	if !o.data([]byte("12345"), appendRaw, "bye", false) {
		t.Fatal("dropped within the limit")
	}
	if first := <-g.got; string(first) != "12345" {
		t.Fatalf("first write %q", first)
	}
	if !o.data([]byte("67890"), appendRaw, "bye", false) {
		t.Fatal("dropped at the limit")
	}
	if o.data([]byte("x"), appendRaw, "bye", false) || !o.isDropped() {
		t.Fatal("not dropped past the limit")
	}
	go func() {
		for range g.got {
		}
	}()
	close(g.release)
	if err := o.wait(); err != nil || g.written() != "12345bye" {
		t.Fatalf("wrote %q, %v", g.written(), err)
	}
	close(g.got)
}

// TestOutQueuePauses: in pause mode, output past the limit marks the
// queue full instead; it stays full until the writer has drained it to
// half the limit, which calls onRoom once; close then ends the writer.
func TestOutQueuePauses(t *testing.T) {
	g := newGateWriter()
	o := newOutQueue(g, 8, nil, nil)
	var rooms atomic.Int32
	o.setOnRoom(func() { rooms.Add(1) })
	o.data([]byte("abcd"), appendRaw, "bye", true)
	<-g.got // "abcd" in flight, still counted
	o.data([]byte("efgh"), appendRaw, "bye", true)
	if _, full := o.fullSince(); full {
		t.Fatal("full at the limit")
	}
	o.data([]byte("ij"), appendRaw, "bye", true)
	if _, full := o.fullSince(); !full || o.isDropped() {
		t.Fatal("not full past the limit, or dropped")
	}
	g.release <- struct{}{} // "abcd" written: 6 left, more than half
	if got := <-g.got; string(got) != "efghij" {
		t.Fatalf("second write %q", got)
	}
	if _, full := o.fullSince(); !full || rooms.Load() != 0 {
		t.Fatalf("room with 6 of 8 queued (full %v, rooms %d)", full, rooms.Load())
	}
	g.release <- struct{}{}
	testwait.For(t, "room", func() bool { return rooms.Load() == 1 })
	if _, full := o.fullSince(); full {
		t.Fatal("still full when drained")
	}
	o.close("end")
	if got := <-g.got; string(got) != "end" {
		t.Fatalf("last write %q", got)
	}
	g.release <- struct{}{}
	if err := o.wait(); err != nil || g.written() != "abcdefghijend" {
		t.Fatalf("wrote %q, %v", g.written(), err)
	}
}

func TestParseServiceURI(t *testing.T) {
	for _, tt := range []struct {
		uri    string
		scheme string
		port   int
	}{
		{"telnet://bridge:7001", "telnet", 7001},
		{"telnets://bridge.example:7002", "telnets", 7002},
		{"tcp://10.0.0.1:7003", "tcp", 7003},
		{"vSPC.py", "telnet", 0},
		{"web-1?port=com2", "telnet", 0},
		{"telnet://bridge", "telnet", 0},
	} {
		got, err := parseServiceURI(tt.uri, "telnet")
		if err != nil || got.scheme != tt.scheme || got.port != tt.port {
			t.Errorf("%q: %+v %v", tt.uri, got, err)
		}
	}
	if _, err := parseServiceURI("telnet://h:99999", "telnet"); err == nil {
		t.Error("port 99999 accepted")
	}
}

func TestModeFor(t *testing.T) {
	for _, tt := range []struct {
		right, asked string
		want         Mode
		err          bool
	}{
		{"rw", "", ModeShared, false},
		{"ro", "", ModeReadOnly, false},
		{"rw", "xw", ModeExclusiveWrite, false},
		{"rw", "x", ModeExclusive, false},
		{"ro", "rw", 0, true},
		{"ro", "x", 0, true},
		{"ro", "ro", ModeReadOnly, false},
		{"rw", "sideways", 0, true},
	} {
		m, err := modeFor(tt.right, tt.asked)
		if m != tt.want || (err != nil) != tt.err {
			t.Errorf("modeFor(%q, %q) = %v, %v", tt.right, tt.asked, m, err)
		}
	}
}

// TestRateLimit: failures per address and per user name block for the
// window, on an injected clock.
func TestRateLimit(t *testing.T) {
	cfg, err := configs.Parse("t.toml", []byte("[vspc]\nlisten = \"127.0.0.1:1\"\n[remote]\nlogin_max_failures = 3\nlogin_window = \"1m\"\n"+
		"[[user]]\nname = \"alice\"\npassword = \"$2a$04$ju15Okgb4JD183DCgYAvgOjrmo3FCMAAX0X4zWAu1yoTS6qJETf0q\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	a := newAuthenticator(cfg, slog.New(slog.DiscardHandler), func() time.Time { return now })
	for range 3 {
		if _, err := a.password("10.0.0.1", "alice", "telnet", []byte("nope")); !errors.Is(err, ErrLoginFailed) {
			t.Fatal(err)
		}
	}
	if _, err := a.password("10.0.0.1", "alice", "telnet", []byte("test")); !errors.Is(err, ErrLoginBlocked) {
		t.Fatalf("address and name blocked: %v", err)
	}
	if _, err := a.password("10.0.0.2", "alice", "telnet", []byte("test")); !errors.Is(err, ErrLoginBlocked) {
		t.Fatalf("name blocked from another address: %v", err)
	}
	if _, err := a.password("10.0.0.1", "bob", "telnet", []byte("x")); !errors.Is(err, ErrLoginBlocked) {
		t.Fatalf("address blocked for another name: %v", err)
	}
	now = now.Add(time.Minute)
	if u, err := a.password("10.0.0.1", "alice", "telnet", []byte("test")); err != nil || u.Name != "alice" {
		t.Fatalf("after the window: %v", err)
	}
	if _, err := a.password("10.0.0.3", "mallory", "ssh", []byte("x")); !errors.Is(err, ErrLoginFailed) {
		t.Fatalf("unknown user: %v", err)
	}
}

// TestPortRangeReclaim: with every port of the range assigned, a new
// serial port gets the port seen longest ago among those not attached
// now; the state file follows, and a port that attaches again refreshes
// its last-seen time (at most once per seenResolution).
func TestPortRangeReclaim(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ports.json")
	s, err := loadPortStore(path, 100, 101)
	if err != nil {
		t.Fatal(err)
	}
	attached := map[int]bool{}
	bind := func(p int) (net.Listener, error) {
		if attached[p] {
			return nil, errors.New("in use")
		}
		return net.Listen("tcp", "127.0.0.1:0") // the port number is what the store records
	}
	take := func(key, vm string) (int, string) {
		t.Helper()
		ln, rec, err := s.assign(key, vm, vm, bind)
		if err != nil {
			t.Fatalf("assign %s: %v", key, err)
		}
		ln.Close()
		return s.ports[key].Port, rec
	}
	if p, rec := take("a", "vm-a"); p != 100 || rec != "" {
		t.Fatalf("a: port %d %q", p, rec)
	}
	if p, rec := take("b", "vm-b"); p != 101 || rec != "" {
		t.Fatalf("b: port %d %q", p, rec)
	}
	long := time.Now().UTC().Add(-48 * time.Hour)
	a := s.ports["a"]
	a.Assigned, a.LastSeen = long, long
	s.ports["a"] = a
	p, rec := take("c", "vm-c")
	if p != 100 || !strings.Contains(rec, `port 100 reclaimed from VM "vm-a"`) {
		t.Fatalf("c: port %d, reclaimed %q", p, rec)
	}
	re, err := loadPortStore(path, 100, 101)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := re.ports["a"]; ok || re.ports["c"].Port != 100 || re.ports["b"].Port != 101 {
		t.Fatalf("state file after reclaim: %+v", re.ports)
	}
	// b was seen before c, but b attached now is not reclaimed: c is, once
	// it detaches; with both attached there is no port.
	attached[101] = true
	if p, rec := take("d", "vm-d"); p != 100 || !strings.Contains(rec, `from VM "vm-c"`) {
		t.Fatalf("d: port %d, reclaimed %q", p, rec)
	}
	attached[100] = true
	if _, _, err := s.assign("e", "vm-e", "vm-e", bind); err == nil || !strings.Contains(err.Error(), "no free port in port_range 100-101") {
		t.Fatalf("e with the range attached: %v", err)
	}
	// Refreshing: b seen 2 h ago gets a new LastSeen when it attaches.
	attached = map[int]bool{}
	b := s.ports["b"]
	b.Assigned, b.LastSeen = time.Now().UTC().Add(-3*time.Hour), time.Now().UTC().Add(-2*time.Hour)
	s.ports["b"] = b
	take("b", "vm-b")
	if re, _ := loadPortStore(path, 100, 101); time.Since(re.ports["b"].LastSeen) > time.Minute {
		t.Fatalf("b's last_seen not refreshed in the state file: %+v", re.ports["b"])
	}
	// A state file from before last_seen: Assigned stands in.
	if (portAssignment{Assigned: long}).seen() != long {
		t.Fatal("seen() without LastSeen")
	}
}
