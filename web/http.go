package web

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/vspc-bridge/vspc-bridge/remote"
)

// csp is the Content-Security-Policy of every answer. No inline script;
// inline styles are allowed because xterm.js 6 injects <style> elements
// (without them it renders black on black).
const csp = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; " +
	"img-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// maxBody bounds a JSON request body.
const maxBody = 4 << 10

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		s.assets.serve(w, r, "index.html", "no-store")
	})
	mux.HandleFunc("GET /static/{path...}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("path")
		if name == "index.html" {
			http.NotFound(w, r)
			return
		}
		s.assets.serve(w, r, name, "no-cache")
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		s.assets.serve(w, r, "icon.svg", "no-cache")
	})
	mux.HandleFunc("GET /api/session", s.handleSession)
	mux.HandleFunc("POST /api/login", s.handleLogin)
	mux.HandleFunc("POST /api/logout", s.handleLogout)
	mux.HandleFunc("GET /api/consoles", s.handleList)
	mux.HandleFunc("GET /api/events", s.handleEvents)
	mux.HandleFunc("GET /api/consoles/{id}/log", s.handleLog)
	mux.HandleFunc("GET /ws/console/{id}", s.handleConsole)
	mux.HandleFunc("GET /ws/watch/{id}", s.handleWatch)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such page: "+r.Method+" "+r.URL.Path)
	})

	return s.headers(s.checkHost(s.crossOrigin(mux)))
}

// crossOrigin refuses cross-origin POSTs (http.CrossOriginProtection, with
// [web] origins trusted).
func (s *Server) crossOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.settings().cop.Check(r); err != nil {
			s.log.Warn("web request refused: cross-origin", "method", r.Method, "path", r.URL.Path, "origin", r.Header.Get("Origin"), "peer", r.RemoteAddr)
			writeError(w, http.StatusForbidden, "cross-origin request refused")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// headers sets the security headers of every answer.
func (s *Server) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), usb=(), serial=()")
		h.Set("Cache-Control", "no-store")
		if s.settings().web.TLS() {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		next.ServeHTTP(w, r)
	})
}

// checkHost refuses, on a loopback listener, a Host that is neither a
// loopback name or address nor one of [web] origins: a page whose name
// was rebound to 127.0.0.1 must not reach the console as its own origin.
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.loopbackOnly {
			host := r.Host
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			if !isLoopbackHost(host) && !slices.Contains(s.settings().originHosts, strings.ToLower(r.Host)) {
				s.log.Warn("web request refused: Host is not a loopback name", "host", r.Host, "peer", r.RemoteAddr)
				writeError(w, http.StatusMisdirectedRequest, "this console answers to loopback names only (or [web] origins)")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{msg})
}

// readJSON decodes a small JSON body. Only application/json is taken: a
// cross-site HTML form cannot send it without a preflight.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "want Content-Type: application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return false
	}
	return true
}

// sessionInfo is the body of GET /api/session and POST /api/login.
type sessionInfo struct {
	User    string    `json:"user"`
	Expires time.Time `json:"expires"` // the session's absolute end
	Log     bool      `json:"log"`     // console logs can be downloaded ([remote] log_dir)
	Watch   bool      `json:"watch"`   // ports joined to a device or remote can be watched
}

func (s *Server) info(ss *session) sessionInfo {
	return sessionInfo{User: ss.user, Expires: ss.created.Add(s.sessions.maxAge()), Log: s.cfg.Config.Remote.LogDir != "", Watch: s.cfg.Taps != nil}
}

func (s *Server) handleSession(w http.ResponseWriter, r *http.Request) {
	ss, _ := s.session(r)
	if ss == nil {
		writeError(w, http.StatusUnauthorized, "not logged in")
		return
	}
	writeJSON(w, http.StatusOK, s.info(ss))
}

type loginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if !readJSON(w, r, &req) {
		return
	}
	ip := clientIP(r)
	u, err := s.cfg.Consoles.Login(ip, req.User, "web", []byte(req.Password))
	switch {
	case errors.Is(err, remote.ErrLoginBlocked):
		writeError(w, http.StatusTooManyRequests, "too many failed logins; try again later")
		return
	case err != nil:
		// The same pause as telnet and SSH after a failure.
		sleep(r.Context(), s.cfg.Config.Remote.LoginDelay.Duration)
		writeError(w, http.StatusUnauthorized, "login incorrect")
		return
	}
	if old, _ := s.session(r); old != nil {
		s.sessions.end(old) // a new login never reuses a session (fixation)
	}
	tok, ss, err := s.sessions.create(u)
	if err != nil {
		s.log.Error("web login failed", "user", u.Name, "err", err)
		writeError(w, http.StatusInternalServerError, "cannot create a session")
		return
	}
	s.setCookie(w, tok, int(s.sessions.maxAge()/time.Second))
	s.log.Info("web session started", "user", u.Name, "peer", r.RemoteAddr, "sessions", s.sessions.count())
	writeJSON(w, http.StatusOK, s.info(ss))
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if ss, _ := s.session(r); ss != nil {
		s.sessions.end(ss)
		s.log.Info("web logout", "user", ss.user, "peer", r.RemoteAddr)
	}
	s.setCookie(w, "", -1)
	w.WriteHeader(http.StatusNoContent)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
