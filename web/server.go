package web

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/remote"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// Consoles is what the web console needs of remote access: logins, the
// users as they are now, the consoles, and attaching to one. HubConsoles
// adapts a *remote.Hub.
type Consoles interface {
	Login(ip, name, via string, password []byte) (*configs.User, error)
	User(name string) *configs.User
	Consoles() []remote.ConsoleInfo
	// Attach attaches a client whose output goes to conn (remote.Hub.Attach).
	Attach(key string, conn remote.ClientConn, o remote.AttachOptions) (Attachment, error)
}

// Attachment is one browser attached to a console (a *remote.Client).
type Attachment interface {
	Replay() int // scrollback bytes at the start of the output
	Input(p []byte) error
	Break() error
	SetMode(m remote.Mode) error
	Mode() remote.Mode
	Done() <-chan struct{} // the hub ended the client: dropped, console gone
	Dropped() bool
	Detach()
}

// HubConsoles adapts a *remote.Hub to Consoles.
func HubConsoles(h *remote.Hub) Consoles { return hubConsoles{h} }

type hubConsoles struct{ *remote.Hub }

func (h hubConsoles) Attach(key string, conn remote.ClientConn, o remote.AttachOptions) (Attachment, error) {
	c, err := h.Hub.Attach(key, conn, o)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Config wires the web console to the bridge. Config and Consoles are
// required.
type Config struct {
	// Config is the bridge's config: [web] and [remote] login_delay and
	// log_dir. A reload's [web] goes to SetConfig; [[user]] changes reach
	// the console through Consoles.User.
	Config   *configs.Config
	Consoles Consoles
	// Ports and Devices list the VM serial ports and the links of the
	// ports joined to a device or remote (a *vspc.Server's Ports and a
	// *bridge.Bridge's Devices), for the list. nil: none.
	Ports   func() []vspc.PortInfo
	Devices func() []bridge.DeviceStatus
	// Taps lets users watch the ports joined to a device or remote (a
	// *bridge.Bridge); nil: they are listed but cannot be watched.
	Taps Taps

	Logger *slog.Logger
	Now    func() time.Time
	Rand   io.Reader // session tokens; nil: crypto/rand
}

// Server is the web console's HTTP handler and the WebSocket and event
// streams it runs. Create it with New; Serve serves it on a listener.
type Server struct {
	cfg          Config
	log          *slog.Logger
	handler      http.Handler
	sessions     *sessions
	assets       *assets
	snap         snapshotCache
	loopbackOnly bool // the listener is loopback: Host must be too (or an origin's)
	set          atomic.Pointer[settings]

	ctx    context.Context // ended by Close: every stream
	cancel context.CancelFunc

	mu       sync.Mutex // guards the fields below
	closed   bool
	open     map[string]int                   // consoles and watches open, per user
	watching map[string]map[*watcher]struct{} // watchers by port key
	wg       sync.WaitGroup                   // stream handlers (WebSockets, event streams)
}

// New returns the web console for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Config == nil || cfg.Consoles == nil {
		return nil, errors.New("web: Config and Consoles are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Ports == nil {
		cfg.Ports = func() []vspc.PortInfo { return nil }
	}
	if cfg.Devices == nil {
		cfg.Devices = func() []bridge.DeviceStatus { return nil }
	}
	a, err := loadAssets()
	if err != nil {
		return nil, err
	}
	w := cfg.Config.Web
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		assets:   a,
		open:     map[string]int{},
		watching: map[string]map[*watcher]struct{}{},
		sessions: &sessions{
			m: map[string]*session{}, idle: w.SessionIdle.Duration, max: w.SessionMax.Duration,
			limit: w.MaxSessions, now: cfg.Now, rand: cfg.Rand,
		},
	}
	s.snap.src = s.collect
	s.snap.now = cfg.Now
	s.set.Store(newSettings(w))
	if w.Listen != "" {
		if host, _, err := net.SplitHostPort(w.Listen); err == nil && isLoopbackHost(host) {
			s.loopbackOnly = true
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.handler = s.routes()
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Serve serves the console on ln until ctx is done; then it stops
// accepting, closes every console and event stream and waits for them. It
// closes ln and returns nil after ctx is done, or the error that stopped
// it. Wrap ln with tls.NewListener for HTTPS.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler: s,
		// No ReadTimeout or WriteTimeout: event streams and WebSockets
		// live long; request bodies are bounded by MaxBytesReader and
		// stream writes by their own deadlines.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		s.Close() // streams first: Shutdown does not wait for hijacked connections
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	})
	err := srv.Serve(ln)
	if stop() {
		s.Close()
		return err // Serve failed on its own
	}
	<-done
	return nil
}

// Close ends every console and event stream and waits for their
// handlers. It does not close listeners (Serve does). It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// track registers a stream handler; false when the server is closing.
// The caller calls s.wg.Done when it ends.
func (s *Server) track() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// reserve counts a console or watch of user against [web] max_consoles.
func (s *Server) reserve(user string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[user] >= s.settings().web.MaxConsoles {
		return false
	}
	s.open[user]++
	return true
}

func (s *Server) release(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[user]--; s.open[user] <= 0 {
		delete(s.open, user)
	}
}

// isLoopbackHost reports whether host is "localhost" or a loopback IP.
func isLoopbackHost(host string) bool {
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// clientIP is the address logins are rate-limited by.
func clientIP(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// settings are the [web] keys a reload may change (SetConfig), with what
// is derived from them. They are replaced whole, never changed.
type settings struct {
	web     configs.Web
	origins []string // [web] origins: WebSocket origin patterns
	// originHosts are the hosts of origins: Host names a loopback
	// listener answers to.
	originHosts []string
	cop         *http.CrossOriginProtection
}

func newSettings(w configs.Web) *settings {
	st := &settings{web: w, origins: w.OriginList(), cop: http.NewCrossOriginProtection()}
	for _, o := range st.origins {
		_, host, _ := strings.Cut(o, "://")
		st.originHosts = append(st.originHosts, host)
		st.cop.AddTrustedOrigin(o) // validated by configs
	}
	return st
}

// settings returns the [web] settings in force.
func (s *Server) settings() *settings { return s.set.Load() }

// SetConfig applies the [web] table of a reloaded config (cfg is valid)
// as far as a running console can: it returns what it applied
// ("web.ping", …) and the keys that take a restart. Applied at once:
// origins, session_idle, session_max, max_sessions (past it the oldest
// sessions end), max_consoles (for consoles opened from now on), ping
// (from each console's next ping) and secure_cookie (the cookie's name
// changes: every session ends and browsers log in again). A restart is
// needed for listen, and for tls_cert and tls_key when they turn TLS on
// or off; new certificate files with TLS on are the caller's (Serve's
// listener). watch_scrollback is the caller's too (bridge.SetTapHistory).
// [[user]] changes reach the console through Consoles.User, not here.
func (s *Server) SetConfig(cfg *configs.Config) (applied, restart []string) {
	old := s.settings().web
	nw := cfg.Web
	if nw.Listen != old.Listen {
		restart = append(restart, "web.listen")
		nw.Listen = old.Listen
	}
	if nw.TLS() != old.TLS() {
		restart = append(restart, "web.tls_cert")
		nw.TLSCert, nw.TLSKey = old.TLSCert, old.TLSKey
	}
	for _, k := range []struct {
		key     string
		changed bool
	}{
		{"web.origins", !slices.Equal(nw.OriginList(), old.OriginList())},
		{"web.secure_cookie", nw.SecureCookie != old.SecureCookie},
		{"web.session_idle", nw.SessionIdle != old.SessionIdle},
		{"web.session_max", nw.SessionMax != old.SessionMax},
		{"web.max_sessions", nw.MaxSessions != old.MaxSessions},
		{"web.max_consoles", nw.MaxConsoles != old.MaxConsoles},
		{"web.ping", nw.Ping != old.Ping},
	} {
		if k.changed {
			applied = append(applied, k.key)
		}
	}
	cookie := s.secureCookie()
	s.set.Store(newSettings(nw))
	s.sessions.setLimits(nw.SessionIdle.Duration, nw.SessionMax.Duration, nw.MaxSessions)
	if s.secureCookie() != cookie {
		n := s.sessions.endAll()
		s.log.Info("web sessions ended: the session cookie's name changed (secure_cookie)", "sessions", n)
	}
	return applied, restart
}
