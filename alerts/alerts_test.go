package alerts

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

func TestMain(m *testing.M) { leaktest.Main(m, 2*time.Second) }

// fakeClock is an injected clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logRecorder collects "console alert" log events.
type logRecorder struct {
	mu     sync.Mutex
	alerts []map[string]any
}

func (l *logRecorder) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err == nil && m["msg"] == "console alert" {
		l.mu.Lock()
		l.alerts = append(l.alerts, m)
		l.mu.Unlock()
	}
	return len(p), nil
}

func (l *logRecorder) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, a := range l.alerts {
		out = append(out, a["vm"].(string)+"|"+a["rule"].(string)+"|"+a["line"].(string))
	}
	return out
}

func newTest(t *testing.T, cfg Config) (*Matcher, *logRecorder, *fakeClock) {
	t.Helper()
	rec := &logRecorder{}
	clk := &fakeClock{t: time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)}
	cfg.Logger = slog.New(slog.NewJSONHandler(rec, nil))
	cfg.Now = clk.now
	return New(cfg), rec, clk
}

func rule(name, re string) Rule { return Rule{Name: name, Pattern: regexp.MustCompile(re)} }

func TestLineAssembly(t *testing.T) {
	m, rec, _ := newTest(t, Config{RateLimit: 100, Rules: []Rule{
		rule("panic", `Kernel panic`),
		rule("login", `login: $`),
		rule("trace", `^Call Trace:$`),
	}})
	for _, chunk := range []string{
		"[    1.0] Kernel pa", "nic - not syncing\r\n", // split across chunks
		"\x1b[1;31mCall\x1b[0m Trace:\n", // colour codes removed
		"\x1b]0;title\x07host login: ",   // OSC title; a prompt with no newline
		"root\r\n",                       // the same line goes on: login fires once
		"Kernel  panic\n",                // no match
		"Kernel panicX\bY\n",             // backspace edits: "Kernel panicY" matches again
	} {
		m.Observe("vm-1", []byte(chunk))
	}
	m.Flush()
	want := []string{
		"vm-1|panic|[    1.0] Kernel panic - not syncing",
		"vm-1|trace|Call Trace:",
		"vm-1|login|host login: ",
		"vm-1|panic|Kernel panicY",
	}
	if got := rec.lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("alerts:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if st := m.Stats(); st.Alerts["panic"] != 2 || st.Alerts["login"] != 1 || st.Alerts["trace"] != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestLongLineIsCut(t *testing.T) {
	m, rec, _ := newTest(t, Config{MaxLine: 100, Rules: []Rule{rule("x", `X`), rule("tail", `TAIL`)}})
	m.Observe("vm", []byte(strings.Repeat("a", 99)+"X"+strings.Repeat("b", 500)+"TAIL\nnext TAIL\n"))
	m.Flush()
	got := rec.lines()
	if len(got) != 2 || got[0] != "vm|x|"+strings.Repeat("a", 99)+"X" || got[1] != "vm|tail|next TAIL" {
		t.Errorf("got %q", got)
	}
}

func TestScope(t *testing.T) {
	m, rec, _ := newTest(t, Config{RateLimit: 100, Rules: []Rule{
		{Name: "web", Pattern: regexp.MustCompile("ERR"), VM: "web-*"},
		{Name: "sw", Pattern: regexp.MustCompile("ERR"), Route: "switch", From: FromDevice},
		{Name: "any", Pattern: regexp.MustCompile("ERR"), From: FromBoth},
	}})
	m.Observe("web-1", []byte("ERR\n"))
	m.Observe("db-1", []byte("ERR\n"))
	m.ObserveConsole("db-1", "switch", true, []byte("ERR\n"))
	m.ObserveStream(Stream{VM: "db-2", FromDevice: true}, []byte("ERR\n"))
	m.Flush()
	want := "web-1|web|ERR web-1|any|ERR db-1|any|ERR db-1|sw|ERR db-1|any|ERR db-2|any|ERR"
	if got := strings.Join(rec.lines(), " "); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestObserveNeverBlocks fills the queue with no matcher running:
// Observe returns at once and counts what it skipped.
func TestObserveNeverBlocks(t *testing.T) {
	m, _, _ := newTest(t, Config{Queue: 16, Rules: []Rule{rule("x", "x")}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			m.Observe("vm", []byte("0123456789"))
		}
	}()
	select {
	case <-done:
	case <-time.After(testwait.Timeout):
		t.Fatal("Observe blocked")
	}
	if st := m.Stats(); st.Skipped != 1000-16 || st.SkippedBytes != 10*(1000-16) {
		t.Errorf("skipped %d chunks, %d bytes; want %d, %d", st.Skipped, st.SkippedBytes, 1000-16, 10*(1000-16))
	}
	// No rule watches device output: nothing is even queued.
	m2, _, _ := newTest(t, Config{Queue: 16, Rules: []Rule{rule("x", "x")}})
	for range 100 {
		m2.ObserveStream(Stream{VM: "vm", FromDevice: true}, []byte("x\n"))
	}
	if len(m2.queue) != 0 {
		t.Errorf("device output queued with no device rule: %d", len(m2.queue))
	}
}

// TestRateLimitAndWebhook raises alerts through Run with a webhook server
// on 127.0.0.1: per VM at most RateLimit per RateWindow, the rest counted
// and reported with the next alert that passes.
func TestRateLimitAndWebhook(t *testing.T) {
	var mu sync.Mutex
	var posts []Alert
	got := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a Alert
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &a) != nil {
			t.Errorf("bad webhook request %s %q %s", r.Method, r.Header.Get("Content-Type"), body)
		}
		var raw map[string]any
		json.Unmarshal(body, &raw)
		for _, k := range []string{"vm", "pattern", "line", "time"} {
			if _, ok := raw[k]; !ok {
				t.Errorf("webhook body lacks %q: %s", k, body)
			}
		}
		mu.Lock()
		posts = append(posts, a)
		mu.Unlock()
		got <- struct{}{}
	}))
	defer srv.Close()
	m, rec, clk := newTest(t, Config{RateLimit: 2, RateWindow: time.Minute, Webhook: srv.URL, Rules: []Rule{rule("panic", "panic")}})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	wait := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-got:
			case <-time.After(testwait.Timeout):
				t.Fatal("webhook POST did not arrive")
			}
		}
	}
	for i := range 5 {
		m.Observe("vm-a", []byte("panic "+string(rune('0'+i))+"\n"))
	}
	m.Observe("vm-b", []byte("panic b\n")) // another VM has its own budget
	wait(3)
	testwait.For(t, "three alerts suppressed", func() bool { return m.Stats().Suppressed == 3 })
	clk.add(30 * time.Second) // one token back
	m.Observe("vm-a", []byte("panic again\n"))
	wait(1)
	mu.Lock()
	defer mu.Unlock()
	var lines []string
	for _, p := range posts {
		lines = append(lines, p.VM+":"+p.Line+":"+string(rune('0'+p.Suppressed)))
	}
	joined := strings.Join(lines, " ")
	for _, w := range []string{"vm-a:panic 0:0", "vm-a:panic 1:0", "vm-b:panic b:0", "vm-a:panic again:3"} {
		if !strings.Contains(joined, w) {
			t.Errorf("webhook posts %q lack %q", joined, w)
		}
	}
	if len(posts) != 4 || len(rec.lines()) != 4 {
		t.Errorf("%d posts, %d log events; want 4", len(posts), len(rec.lines()))
	}
	if p := posts[len(posts)-1]; p.Pattern != "panic" || p.From != "vm" || !p.Time.Equal(clk.now()) {
		t.Errorf("last post %+v", p)
	}
	testwait.For(t, "four webhooks counted as sent", func() bool { return m.Stats().WebhookSent == 4 })
	st := m.Stats()
	if st.Alerts["panic"] != 4 || st.WebhookSent != 4 || st.WebhookFailed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestWebhookFailureCounted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nope", http.StatusBadGateway)
	}))
	defer srv.Close()
	m, _, _ := newTest(t, Config{Webhook: srv.URL, Rules: []Rule{rule("x", "x")}})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { m.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	m.Observe("vm", []byte("x\n"))
	testwait.For(t, "a failed webhook counted", func() bool { return m.Stats().WebhookFailed == 1 })
}

func TestSetConfigAndFromConfig(t *testing.T) {
	c, err := configs.Parse("a.toml", []byte(`[vspc]
listen = "127.0.0.1:13370"
[alerts]
rate_limit = 9
max_line = 200
[[alert]]
name = "p"
pattern = "boom"
from = "both"
`))
	if err != nil {
		t.Fatal(err)
	}
	mc := FromConfig(c)
	if mc.RateLimit != 9 || mc.MaxLine != 200 || len(mc.Rules) != 1 || mc.Rules[0].From != FromBoth || mc.Rules[0].Pattern.String() != "boom" {
		t.Errorf("FromConfig = %+v", mc)
	}
	m, rec, _ := newTest(t, Config{Rules: []Rule{rule("a", "A")}})
	m.Observe("vm", []byte("A B"))
	m.Flush()
	m.SetConfig(Config{Rules: []Rule{rule("b", "B")}, Now: m.now, Logger: m.log})
	m.Observe("vm", []byte(" more\n"))
	m.Flush()
	if got := strings.Join(rec.lines(), " "); got != "vm|a|A B vm|b|A B more" {
		t.Errorf("got %q", got)
	}
	if r := m.Rules(); len(r) != 1 || r[0] != "b" {
		t.Errorf("Rules() = %v", r)
	}
}

func TestNoRulesIsFree(t *testing.T) {
	m := New(Config{})
	p := bytes.Repeat([]byte("x"), 4096)
	if n := testing.AllocsPerRun(100, func() { m.Observe("vm", p) }); n != 0 {
		t.Errorf("Observe with no rules allocates %v times", n)
	}
}
