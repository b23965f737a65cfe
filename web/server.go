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
	"strings"
	"sync"
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
	// Config is the bridge's config: [web] and [remote] login_delay.
	// [web] changes need a restart; [[user]] changes reach the console
	// through Consoles.User.
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
	cfg      Config
	web      configs.Web
	log      *slog.Logger
	handler  http.Handler
	sessions *sessions
	assets   *assets
	snap     snapshotCache
	origins  []string // [web] origins
	// originHosts are the hosts of origins, as WebSocket origin patterns.
	originHosts  []string
	loopbackOnly bool // the listener is loopback: Host must be too (or an origin's)

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
		web:      w,
		log:      cfg.Logger,
		assets:   a,
		origins:  w.OriginList(),
		open:     map[string]int{},
		watching: map[string]map[*watcher]struct{}{},
		sessions: &sessions{
			m: map[string]*session{}, idle: w.SessionIdle.Duration, max: w.SessionMax.Duration,
			limit: w.MaxSessions, now: cfg.Now, rand: cfg.Rand,
		},
	}
	s.snap.src = s.collect
	s.snap.now = cfg.Now
	for _, o := range s.origins {
		_, host, _ := strings.Cut(o, "://")
		s.originHosts = append(s.originHosts, host)
	}
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
	if s.open[user] >= s.web.MaxConsoles {
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
