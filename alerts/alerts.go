package alerts

import (
	"context"
	"log/slog"
	"net/http"
	"path"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

// From says whose output a rule watches.
type From uint8

const (
	FromVM     From = 1 << iota // what the VM writes to its serial port: its console
	FromDevice                  // what the device or remote system sends to the VM
	FromBoth   = FromVM | FromDevice
)

// String returns the config spelling: vm, device or both.
func (f From) String() string {
	switch f {
	case FromVM:
		return configs.AlertFromVM
	case FromDevice:
		return configs.AlertFromDevice
	case FromBoth:
		return configs.AlertFromBoth
	}
	return "none"
}

// Rule is one alert rule.
type Rule struct {
	Name    string
	Pattern *regexp.Regexp
	VM      string // glob on the VM name; "" any
	Route   string // route name; "" any
	From    From   // zero means FromVM
}

func (r *Rule) applies(s Stream) bool {
	from := r.From
	if from == 0 {
		from = FromVM
	}
	dir := FromVM
	if s.FromDevice {
		dir = FromDevice
	}
	if from&dir == 0 || r.Route != "" && r.Route != s.Route {
		return false
	}
	if r.VM == "" {
		return true
	}
	if !strings.ContainsAny(r.VM, `*?[\`) {
		return r.VM == s.VM
	}
	ok, _ := path.Match(r.VM, s.VM)
	return ok
}

// Config configures a Matcher. Zero fields take the defaults of the
// [alerts] table.
type Config struct {
	Rules          []Rule
	Webhook        string        // POST URL; "" none
	WebhookTimeout time.Duration // default 5s
	RateLimit      int           // alerts per VM per RateWindow; default 5
	RateWindow     time.Duration // default 1m
	Queue          int           // chunks waiting for the matcher; default 4096 (fixed at New)
	MaxLine        int           // default 4096

	Logger *slog.Logger
	Client *http.Client     // default: a client with WebhookTimeout
	Now    func() time.Time // default time.Now
}

// FromConfig returns the Matcher configuration in a parsed config file.
func FromConfig(c *configs.Config) Config {
	a := c.Alerts
	mc := Config{
		Webhook:        a.Webhook,
		WebhookTimeout: a.WebhookTimeout.Duration,
		RateLimit:      a.RateLimit,
		RateWindow:     a.RateWindow.Duration,
		Queue:          a.Queue,
		MaxLine:        int(a.MaxLine),
	}
	for i := range c.AlertRules {
		r := &c.AlertRules[i]
		from := FromVM
		switch r.From {
		case configs.AlertFromDevice:
			from = FromDevice
		case configs.AlertFromBoth:
			from = FromBoth
		}
		mc.Rules = append(mc.Rules, Rule{Name: r.Name, Pattern: r.Regexp(), VM: r.VM, Route: r.Route, From: from})
	}
	return mc
}

func (c *Config) setDefaults() {
	if c.WebhookTimeout <= 0 {
		c.WebhookTimeout = 5 * time.Second
	}
	if c.RateLimit <= 0 {
		c.RateLimit = 5
	}
	if c.RateWindow <= 0 {
		c.RateWindow = time.Minute
	}
	if c.Queue <= 0 {
		c.Queue = 4096
	}
	if c.MaxLine <= 0 {
		c.MaxLine = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Stream identifies one direction of one VM serial port's data.
type Stream struct {
	VM         string // VM name
	Route      string // the [[route]] the port was joined through; "" none
	FromDevice bool   // data from the device to the VM (else from the VM)
}

// Alert is one match that passed the rate limit: what the log event and
// the webhook carry.
type Alert struct {
	VM         string    `json:"vm"`
	Pattern    string    `json:"pattern"`
	Line       string    `json:"line"`
	Time       time.Time `json:"time"`
	Rule       string    `json:"rule"`
	Route      string    `json:"route,omitempty"`
	From       string    `json:"from"`       // vm or device
	Suppressed int       `json:"suppressed"` // this VM's alerts dropped by the rate limit since its previous alert
}

// Stats are cumulative counts for metrics.
type Stats struct {
	Alerts         map[string]int64 // raised (after the rate limit), by rule name
	Suppressed     int64            // matches over the per-VM rate limit
	Skipped        int64            // chunks of output not matched because the queue was full
	SkippedBytes   int64
	WebhookSent    int64 // POSTs answered 2xx
	WebhookFailed  int64 // POSTs that failed or got another status
	WebhookDropped int64 // alerts not POSTed because the webhook queue was full
}

type chunk struct {
	s Stream
	b []byte
}

// ruleSet is an immutable generation of rules.
type ruleSet struct {
	gen        uint64
	rules      []Rule
	vm, device bool // some rule watches that direction
}

// Matcher matches console output against alert rules. Observe and
// ObserveStream may be called from any goroutine; Run does the work.
type Matcher struct {
	log   *slog.Logger
	now   func() time.Time
	queue chan chunk
	hooks chan Alert

	rules   atomic.Pointer[ruleSet]
	skipped atomic.Int64
	skipB   atomic.Int64

	mu     sync.Mutex // guards the fields below
	cfg    Config
	client *http.Client
	stats  Stats

	// Owned by the Run goroutine.
	streams map[Stream]*lineState
	buckets map[string]*bucket
}

// New returns a Matcher; call Run to start matching.
func New(cfg Config) *Matcher {
	cfg.setDefaults()
	m := &Matcher{
		log:     cfg.Logger,
		now:     cfg.Now,
		queue:   make(chan chunk, cfg.Queue),
		hooks:   make(chan Alert, 256),
		streams: make(map[Stream]*lineState),
		buckets: make(map[string]*bucket),
	}
	m.stats.Alerts = make(map[string]int64)
	m.SetConfig(cfg)
	return m
}

// SetConfig replaces the rules, the rate limit, the line size and the
// webhook. Queue keeps the size given to New. Lines being assembled are
// kept.
func (m *Matcher) SetConfig(cfg Config) {
	cfg.setDefaults()
	rs := &ruleSet{rules: cfg.Rules}
	for _, r := range cfg.Rules {
		from := r.From
		if from == 0 {
			from = FromVM
		}
		rs.vm = rs.vm || from&FromVM != 0
		rs.device = rs.device || from&FromDevice != 0
	}
	m.mu.Lock()
	m.cfg = cfg
	m.client = cfg.Client
	if m.client == nil {
		m.client = &http.Client{Timeout: cfg.WebhookTimeout}
	}
	if old := m.rules.Load(); old != nil {
		rs.gen = old.gen + 1
	}
	m.rules.Store(rs)
	m.mu.Unlock()
}

// Observe hands a chunk of a VM's console output (what the VM wrote to its
// serial port) to the matcher. It copies p, never blocks, and returns at
// once when no rule watches VM output; when the queue is full the chunk is
// skipped and counted.
func (m *Matcher) Observe(vm string, p []byte) {
	m.ObserveStream(Stream{VM: vm}, p)
}

// ObserveStream is Observe for a stream that names its route and
// direction.
func (m *Matcher) ObserveStream(s Stream, p []byte) {
	rs := m.rules.Load()
	if len(p) == 0 || s.FromDevice && !rs.device || !s.FromDevice && !rs.vm {
		return
	}
	c := chunk{s: s, b: append([]byte(nil), p...)}
	select {
	case m.queue <- c:
	default:
		m.skipped.Add(1)
		m.skipB.Add(int64(len(p)))
	}
}

// ObserveConsole is ObserveStream with plain arguments, so that the
// forwarding code can declare its own one-method interface for it:
// p is what the VM wrote (fromDevice false) or what its device or remote
// sent to it (fromDevice true); route is the [[route]] name, "" if none.
func (m *Matcher) ObserveConsole(vm, route string, fromDevice bool, p []byte) {
	m.ObserveStream(Stream{VM: vm, Route: route, FromDevice: fromDevice}, p)
}

// Stats returns a copy of the counters.
func (m *Matcher) Stats() Stats {
	m.mu.Lock()
	st := m.stats
	st.Alerts = make(map[string]int64, len(m.stats.Alerts))
	for k, v := range m.stats.Alerts {
		st.Alerts[k] = v
	}
	m.mu.Unlock()
	st.Skipped = m.skipped.Load()
	st.SkippedBytes = m.skipB.Load()
	return st
}

// Rules returns the names of the rules in force.
func (m *Matcher) Rules() []string {
	rs := m.rules.Load()
	names := make([]string, len(rs.rules))
	for i, r := range rs.rules {
		names[i] = r.Name
	}
	return names
}

// Run matches queued output until ctx is done, and posts webhooks from a
// second goroutine that it waits for before returning.
func (m *Matcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { m.postLoop(ctx) })
	defer wg.Wait()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-m.queue:
			m.process(c)
		case <-tick.C:
			m.evict()
		}
	}
}

// Flush processes every chunk queued so far on the calling goroutine (for
// tests and shutdown); it must not run concurrently with Run.
func (m *Matcher) Flush() {
	for {
		select {
		case c := <-m.queue:
			m.process(c)
		default:
			return
		}
	}
}

// lineState assembles one stream's lines.
type lineState struct {
	buf   []byte
	esc   uint8 // escape-sequence state: 0 none, 1 after ESC, 2 CSI, 3 OSC, 4 ESC inside OSC
	over  bool  // the line reached MaxLine: the rest of it is ignored
	gen   uint64
	fired []bool // by rule index: already fired on this line
	last  time.Time
}

const (
	escNone = iota
	escStart
	escCSI
	escOSC
	escOSCEsc
)

func (m *Matcher) process(c chunk) {
	rs := m.rules.Load()
	m.mu.Lock()
	maxLine := m.cfg.MaxLine
	m.mu.Unlock()
	st := m.streams[c.s]
	if st == nil {
		st = &lineState{}
		m.streams[c.s] = st
	}
	st.last = m.now()
	for _, b := range c.b {
		switch st.esc {
		case escStart:
			switch b {
			case '[':
				st.esc = escCSI
			case ']':
				st.esc = escOSC
			default:
				st.esc = escNone
			}
			continue
		case escCSI:
			if b >= 0x40 && b <= 0x7e {
				st.esc = escNone
			}
			continue
		case escOSC:
			switch b {
			case 0x07:
				st.esc = escNone
			case 0x1b:
				st.esc = escOSCEsc
			}
			continue
		case escOSCEsc:
			st.esc = escNone
			continue
		}
		switch {
		case b == 0x1b:
			st.esc = escStart
		case b == '\n' || b == '\r':
			if len(st.buf) > 0 {
				m.match(c.s, st, rs)
			}
			st.buf, st.over = st.buf[:0], false
			clear(st.fired)
		case b == '\b' || b == 0x7f:
			if len(st.buf) > 0 && !st.over {
				st.buf = st.buf[:len(st.buf)-1]
			}
		case b < 0x20 && b != '\t':
		case st.over:
		case len(st.buf) >= maxLine:
			st.over = true
		default:
			st.buf = append(st.buf, b)
		}
	}
	if len(st.buf) > 0 {
		m.match(c.s, st, rs) // a prompt or a line still being written
	}
	if cap(st.buf) > 4*maxLine {
		st.buf = append([]byte(nil), st.buf...)
	}
}

func (m *Matcher) match(s Stream, st *lineState, rs *ruleSet) {
	if st.gen != rs.gen || len(st.fired) != len(rs.rules) {
		st.gen = rs.gen
		st.fired = make([]bool, len(rs.rules))
	}
	for i := range rs.rules {
		r := &rs.rules[i]
		if st.fired[i] || !r.applies(s) || !r.Pattern.Match(st.buf) {
			continue
		}
		st.fired[i] = true
		m.raise(s, r, string(st.buf))
	}
}

// bucket is one VM's rate limit: a token bucket holding up to RateLimit
// tokens, refilled at RateLimit per RateWindow.
type bucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

func (m *Matcher) raise(s Stream, r *Rule, line string) {
	now := m.now()
	m.mu.Lock()
	limit, window, webhook := m.cfg.RateLimit, m.cfg.RateWindow, m.cfg.Webhook
	b := m.buckets[s.VM]
	if b == nil {
		b = &bucket{tokens: float64(limit), last: now}
		m.buckets[s.VM] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(limit), b.tokens+float64(limit)*float64(el)/float64(window))
		b.last = now
	}
	if b.tokens < 1 {
		b.suppressed++
		m.stats.Suppressed++
		m.mu.Unlock()
		m.log.Debug("console alert suppressed by the rate limit", "vm", s.VM, "rule", r.Name)
		return
	}
	b.tokens--
	a := Alert{VM: s.VM, Pattern: r.Pattern.String(), Line: line, Time: now.UTC(), Rule: r.Name, Route: s.Route, From: "vm", Suppressed: b.suppressed}
	if s.FromDevice {
		a.From = "device"
	}
	b.suppressed = 0
	m.stats.Alerts[r.Name]++
	m.mu.Unlock()
	m.log.Warn("console alert", "vm", a.VM, "rule", a.Rule, "pattern", a.Pattern, "line", a.Line, "from", a.From, "route", a.Route, "suppressed", a.Suppressed)
	if webhook == "" {
		return
	}
	select {
	case m.hooks <- a:
	default:
		m.mu.Lock()
		m.stats.WebhookDropped++
		m.mu.Unlock()
		m.log.Warn("console alert not sent to the webhook: too many waiting", "vm", a.VM, "rule", a.Rule)
	}
}

// evict forgets idle streams and full buckets.
func (m *Matcher) evict() {
	now := m.now()
	for k, st := range m.streams {
		if now.Sub(st.last) > 10*time.Minute {
			delete(m.streams, k)
		}
	}
	m.mu.Lock()
	window := m.cfg.RateWindow
	for vm, b := range m.buckets {
		if now.Sub(b.last) > window && b.suppressed == 0 {
			delete(m.buckets, vm)
		}
	}
	m.mu.Unlock()
}
