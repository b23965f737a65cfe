package web

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

// tokenBytes is the entropy of a session token.
const tokenBytes = 32

// session is a login in one browser. The cookie holds a random token;
// the server keeps only its SHA-256, so the table cannot be replayed.
type session struct {
	id      string // hex SHA-256 of the token
	user    string
	pwHash  string // the user's bcrypt hash at login: a new password ends the session
	created time.Time
	ctx     context.Context // ended with the session: closes its consoles
	cancel  context.CancelFunc

	mu       sync.Mutex // guards the fields below
	lastSeen time.Time
	streams  int // consoles and event streams open now
}

// sessions is the table of logged-in sessions, bounded by limit (the
// oldest is logged out to make room).
type sessions struct {
	now  func() time.Time
	rand io.Reader

	mu        sync.Mutex // guards the fields below
	idle, max time.Duration
	limit     int
	m         map[string]*session
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// create starts a session for u and returns its token.
func (ss *sessions) create(u *configs.User) (string, *session, error) {
	b := make([]byte, tokenBytes)
	if _, err := io.ReadFull(ss.rand, b); err != nil {
		return "", nil, fmt.Errorf("web: session token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	now := ss.now()
	s := &session{id: hashToken(tok), user: u.Name, pwHash: u.Password, created: now, lastSeen: now}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for id, o := range ss.m {
		if !ss.alive(o, now) {
			o.cancel()
			delete(ss.m, id)
		}
	}
	ss.evict(ss.limit - 1)
	ss.m[s.id] = s
	return tok, s, nil
}

// evict logs the oldest sessions out until at most n are left. ss.mu is
// held.
func (ss *sessions) evict(n int) {
	for len(ss.m) > n {
		var oldest *session
		for _, o := range ss.m {
			if oldest == nil || o.created.Before(oldest.created) {
				oldest = o
			}
		}
		oldest.cancel()
		delete(ss.m, oldest.id)
	}
}

// setLimits applies new [web] session_idle, session_max and max_sessions:
// sessions past them end now (too many) or when next looked at (expired).
func (ss *sessions) setLimits(idle, max time.Duration, limit int) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.idle, ss.max, ss.limit = idle, max, limit
	ss.evict(limit)
}

// maxAge is [web] session_max.
func (ss *sessions) maxAge() time.Duration {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.max
}

// endAll logs every session out and says how many there were.
func (ss *sessions) endAll() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	n := len(ss.m)
	for id, s := range ss.m {
		s.cancel()
		delete(ss.m, id)
	}
	return n
}

// alive reports whether s has not expired at now. ss.mu is held.
func (ss *sessions) alive(s *session, now time.Time) bool {
	if s.ctx.Err() != nil || now.Sub(s.created) >= ss.max {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams > 0 || now.Sub(s.lastSeen) < ss.idle
}

// lookup returns the live session of tok and marks it used, or nil.
func (ss *sessions) lookup(tok string) *session {
	if tok == "" {
		return nil
	}
	id := hashToken(tok)
	now := ss.now()
	ss.mu.Lock()
	s := ss.m[id]
	if s != nil && !ss.alive(s, now) {
		s.cancel()
		delete(ss.m, id)
		s = nil
	}
	ss.mu.Unlock()
	if s != nil {
		s.mu.Lock()
		s.lastSeen = now
		s.mu.Unlock()
	}
	return s
}

// end logs s out: it is forgotten and its streams are closed.
func (ss *sessions) end(s *session) {
	ss.mu.Lock()
	delete(ss.m, s.id)
	ss.mu.Unlock()
	s.cancel()
}

// endUser logs every session of user out.
func (ss *sessions) endUser(user string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for id, s := range ss.m {
		if s.user == user {
			s.cancel()
			delete(ss.m, id)
		}
	}
}

// count is the number of sessions in the table.
func (ss *sessions) count() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.m)
}

// streamOpened and streamClosed keep a session alive while it has open
// consoles or event streams.
func (s *session) streamOpened() {
	s.mu.Lock()
	s.streams++
	s.mu.Unlock()
}

func (s *session) streamClosed(now time.Time) {
	s.mu.Lock()
	s.streams--
	s.lastSeen = now
	s.mu.Unlock()
}

// cookieName is the session cookie's name: with the __Host- prefix when
// the cookie is Secure (the browser then insists on Secure, Path=/ and no
// Domain).
func (s *Server) cookieName() string {
	if s.secureCookie() {
		return "__Host-vspc_session"
	}
	return "vspc_session"
}

func (s *Server) secureCookie() bool {
	w := &s.settings().web
	return w.TLS() || w.SecureCookie
}

func (s *Server) setCookie(w http.ResponseWriter, tok string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(), Value: tok, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: s.secureCookie(), SameSite: http.SameSiteStrictMode,
	})
}

// session returns the request's live session and its user as they are
// now, or nil. A session whose user was removed or given a new password
// (a reload) ends here.
func (s *Server) session(r *http.Request) (*session, *configs.User) {
	c, err := r.Cookie(s.cookieName())
	if err != nil {
		return nil, nil
	}
	ss := s.sessions.lookup(c.Value)
	if ss == nil {
		return nil, nil
	}
	u := s.cfg.Consoles.User(ss.user)
	if u == nil || u.Password != ss.pwHash {
		s.log.Info("web session ended: the user was removed or their password changed", "user", ss.user)
		s.sessions.end(ss)
		return nil, nil
	}
	return ss, u
}

// current re-checks a session during a stream: it returns the user as
// they are now, or nil when the session or the user's login has ended.
func (s *Server) current(ss *session) *configs.User {
	if ss.ctx.Err() != nil {
		return nil
	}
	now := s.cfg.Now()
	if now.Sub(ss.created) >= s.sessions.maxAge() {
		s.sessions.end(ss)
		return nil
	}
	u := s.cfg.Consoles.User(ss.user)
	if u == nil || u.Password != ss.pwHash {
		s.sessions.end(ss)
		return nil
	}
	return u
}
