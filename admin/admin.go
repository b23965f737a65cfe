package admin

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vspc-bridge/vspc-bridge/alerts"
	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// Server is what the endpoint reads from the VM side (a *vspc.Server).
type Server interface {
	Ports() []vspc.PortInfo
	Counters() vspc.Counters
	Sessions() int
}

// Config wires the endpoint to the daemon. Only Server is required; nil
// functions leave their part out.
type Config struct {
	Server  Server
	Devices func() []bridge.DeviceStatus // a *bridge.Bridge's Devices
	// Consoles lists the remote-access consoles of direction-server
	// ports (package remote) with their attached users.
	Consoles func() []Console
	// Remote returns the remote-access counters (a *remote.Hub's
	// Counters), or nil when remote access is off; a nil func is the same.
	Remote func() *RemoteCounters
	Alerts func() alerts.Stats
	// Parked returns how many idle connections are parked (an
	// internal/park Parker's Parked); nil reports none.
	Parked func() int
	// Status fills in the bridge-wide part of /api/v1/status (version,
	// listeners, reloads); the handler adds ports, counters and time.
	Status func() Status
	// Ready reports why the bridge is not ready (nil: ready).
	Ready func() error
	// Reload re-reads the config (POST /api/v1/reload); nil: 404.
	Reload func(ctx context.Context) ReloadResult
	// Token returns the bearer token in force ("" none). It is called on
	// every request, so a reload can change it.
	Token func() string
	// Owners returns the serial ports of the VM with this name or VC
	// UUID that other cluster members serve (nil: a single node).
	Owners func(ctx context.Context, vm string) ([]PortOwner, error)

	Logger *slog.Logger
	Now    func() time.Time
}

// Handler serves the admin API. Create it with New.
type Handler struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
}

// New returns the admin handler with its own Prometheus registry: the
// bridge Collector plus the Go runtime and process collectors.
func New(cfg Config) *Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(cfg), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPromLogger{h.log}, Timeout: 10 * time.Second})

	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.Handle("GET /metrics", h.auth(metrics))
	h.mux.Handle("GET /api/v1/status", h.auth(http.HandlerFunc(h.status)))
	h.mux.Handle("GET /api/v1/sessions", h.auth(http.HandlerFunc(h.sessions)))
	h.mux.Handle("GET /api/v1/devices", h.auth(http.HandlerFunc(h.devices)))
	h.mux.Handle("POST /api/v1/reload", h.auth(http.HandlerFunc(h.reload)))
	h.mux.Handle("/", h.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, ErrorBody{"admin: no such endpoint: " + r.Method + " " + r.URL.Path})
	})))
	return h
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Serve serves the handler on ln until ctx is done, then shuts the HTTP
// server down (in-flight requests get up to 5 s). It closes ln. It
// returns nil after ctx is done.
func (h *Handler) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	})
	err := srv.Serve(ln)
	if stop() {
		return err // Serve failed on its own
	}
	<-done
	return nil
}

// auth checks the bearer token. Without a token (loopback only, see
// configs) it guards against web pages instead: a Host that is not a
// loopback name or address (DNS rebinding) and a browser's cross-site
// request (an Origin header) are refused.
func (h *Handler) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := ""
		if h.cfg.Token != nil {
			want = h.cfg.Token()
		}
		if want != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
			if !ok || subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="vspc-bridge"`)
				writeJSON(w, http.StatusUnauthorized, ErrorBody{"admin: missing or wrong bearer token"})
				return
			}
		} else if !loopbackHost(r.Host) || r.Header.Get("Origin") != "" {
			writeJSON(w, http.StatusForbidden, ErrorBody{"admin: without a token only local clients may call the API (Host must be a loopback address, no Origin)"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether an HTTP Host names this machine's
// loopback interface.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Ready != nil {
		if err := h.cfg.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ready\n"))
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	var st Status
	if h.cfg.Status != nil {
		st = h.cfg.Status()
	}
	st.Time = h.cfg.Now()
	st.Ports = len(h.cfg.Server.Ports())
	st.Conns = h.cfg.Server.Sessions()
	st.Counters = countersFrom(h.cfg.Server.Counters())
	if h.cfg.Remote != nil {
		st.Remote = h.cfg.Remote()
	}
	if st.Listeners == nil {
		st.Listeners = []Listener{}
	}
	if st.Alerts == nil {
		st.Alerts = []string{}
	}
	writeJSON(w, http.StatusOK, st)
}

// Sessions returns every port joined with its device and remote users,
// sorted by VM name and service URI. vm, when not empty, selects the
// ports of the VM with that name or VC UUID.
func (h *Handler) Sessions(vm string) []Session {
	devs := map[vspc.PortKey]*Device{}
	if h.cfg.Devices != nil {
		for _, d := range h.cfg.Devices() {
			dv := deviceFrom(d)
			devs[vspc.PortKeyOf(d.VCUUID, d.VMName, d.ServiceURI)] = &dv
		}
	}
	cons := map[vspc.PortKey]Console{}
	if h.cfg.Consoles != nil {
		for _, c := range h.cfg.Consoles() {
			cons[vspc.PortKeyOf(c.VCUUID, c.VMName, c.ServiceURI)] = c
		}
	}
	out := []Session{}
	for _, p := range h.cfg.Server.Ports() {
		if vm != "" && p.VMName != vm && !strings.EqualFold(p.VCUUID, vm) {
			continue
		}
		s := sessionFrom(p)
		key := vspc.PortKeyOf(p.VCUUID, p.VMName, p.ServiceURI)
		s.Device = devs[key]
		if c, ok := cons[key]; ok {
			s.RemoteListen = c.Listen
			if c.Users != nil {
				s.RemoteUsers = c.Users
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Session) int {
		return cmp.Or(cmp.Compare(a.VM, b.VM), cmp.Compare(a.ServiceURI, b.ServiceURI), a.Since.Compare(b.Since))
	})
	return out
}

func (h *Handler) sessions(w http.ResponseWriter, r *http.Request) {
	vm := r.URL.Query().Get("vm")
	list := SessionList{Time: h.cfg.Now(), Sessions: h.Sessions(vm)}
	if vm != "" && h.cfg.Owners != nil {
		o, err := h.cfg.Owners(r.Context(), vm)
		if err != nil {
			h.log.Info("sessions: cannot read which members serve the VM's other ports", "vm", vm, "err", err)
		}
		list.Elsewhere = o
	}
	if vm != "" && len(list.Sessions) == 0 && len(list.Elsewhere) == 0 {
		writeJSON(w, http.StatusNotFound, ErrorBody{"admin: no VM named " + vm + " has a serial port on this bridge"})
		return
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *Handler) devices(w http.ResponseWriter, r *http.Request) {
	list := DeviceList{Time: h.cfg.Now(), Devices: []Device{}}
	if h.cfg.Devices != nil {
		for _, d := range h.cfg.Devices() {
			list.Devices = append(list.Devices, deviceFrom(d))
		}
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *Handler) reload(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Reload == nil {
		writeJSON(w, http.StatusNotFound, ErrorBody{"admin: reload is not available (no config file)"})
		return
	}
	h.log.Info("config reload requested over the admin API", "peer", r.RemoteAddr)
	res := h.cfg.Reload(r.Context())
	code := http.StatusOK
	if !res.OK {
		code = http.StatusUnprocessableEntity
	}
	writeJSON(w, code, res)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// slogPromLogger adapts slog to promhttp's error logger.
type slogPromLogger struct{ log *slog.Logger }

func (l slogPromLogger) Println(v ...any) {
	l.log.Warn("metrics: " + strings.TrimSpace(fmt.Sprintln(v...)))
}
