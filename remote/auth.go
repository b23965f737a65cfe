package remote

import (
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

// Login errors. Users see one message for every failure, so that they
// cannot tell a wrong password from an unknown user; the log says which.
var (
	ErrLoginFailed  = errors.New("remote: login incorrect")
	ErrLoginBlocked = errors.New("remote: too many failed logins; try again later")
	ErrNoAccess     = errors.New("remote: no access to that console")
)

// maxFailureKeys bounds the failure table (addresses and names a peer can
// make up); past it, the oldest records are forgotten first.
const maxFailureKeys = 10000

// authenticator checks logins against the [[user]] tables and rate-limits
// failures per source address and per user name.
type authenticator struct {
	umu    sync.Mutex     // guards users
	users  []configs.User // replaced by setUsers (reload)
	max    int
	window time.Duration
	now    func() time.Time
	log    *slog.Logger
	dummy  []byte // bcrypt hash compared for unknown users (same timing)
	fmu    sync.Mutex
	failed map[string][]time.Time // guarded by fmu: "ip 10.0.0.1" / "user alice" → failure times within window

	failures atomic.Int64 // failed logins, for Counters
	refused  atomic.Int64 // logins refused while rate-limited
}

func newAuthenticator(cfg *configs.Config, log *slog.Logger, now func() time.Time) *authenticator {
	a := &authenticator{
		users:  cfg.Users,
		max:    cfg.Remote.LoginMaxFailures,
		window: cfg.Remote.LoginWindow.Duration,
		now:    now,
		log:    log,
		failed: map[string][]time.Time{},
	}
	cost := bcrypt.MinCost
	for _, u := range cfg.Users {
		if c, err := bcrypt.Cost([]byte(u.Password)); err == nil {
			cost = c
			break
		}
	}
	a.dummy, _ = bcrypt.GenerateFromPassword([]byte("vspc-bridge dummy password"), cost)
	return a
}

func (a *authenticator) user(name string) *configs.User {
	a.umu.Lock()
	users := a.users
	a.umu.Unlock()
	for i := range users {
		if users[i].Name == name {
			return &users[i]
		}
	}
	return nil
}

func (a *authenticator) setUsers(users []configs.User) {
	a.umu.Lock()
	a.users = users
	a.umu.Unlock()
}

func hostOf(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	if h, _, err := net.SplitHostPort(addr.String()); err == nil {
		return h
	}
	return addr.String()
}

// isBlocked reports whether logins from ip or for name are blocked now.
func (a *authenticator) isBlocked(ip, name string) bool {
	a.fmu.Lock()
	defer a.fmu.Unlock()
	now := a.now()
	for _, k := range []string{"ip " + ip, "user " + name} {
		if a.recent(k, now) >= a.max {
			return true
		}
	}
	return false
}

// recent prunes and counts the failures of k within the window. fmu held.
func (a *authenticator) recent(k string, now time.Time) int {
	ts := a.failed[k]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= a.window {
		i++
	}
	ts = ts[i:]
	if len(ts) == 0 {
		delete(a.failed, k)
		return 0
	}
	a.failed[k] = ts
	return len(ts)
}

// fail records a failed login and logs it once.
func (a *authenticator) fail(ip, name, via, reason string) {
	a.fmu.Lock()
	now := a.now()
	if len(a.failed) >= maxFailureKeys {
		for k := range a.failed {
			if a.recent(k, now) == 0 || len(a.failed) >= maxFailureKeys {
				delete(a.failed, k)
			}
			if len(a.failed) < maxFailureKeys/2 {
				break
			}
		}
	}
	var n int
	for _, k := range []string{"ip " + ip, "user " + name} {
		a.failed[k] = append(a.failed[k], now)
		n = max(n, a.recent(k, now))
	}
	a.fmu.Unlock()
	a.failures.Add(1)
	a.log.Warn("remote login failed", "user", name, "peer_ip", ip, "via", via, "reason", reason, "recent_failures", n)
}

// password checks a password login. It returns ErrLoginBlocked while the
// address or name is rate-limited, ErrLoginFailed otherwise.
func (a *authenticator) password(ip, name, via string, pw []byte) (*configs.User, error) {
	if a.isBlocked(ip, name) {
		a.refused.Add(1)
		a.log.Warn("remote login refused: too many failures", "user", name, "peer_ip", ip, "via", via)
		return nil, ErrLoginBlocked
	}
	u := a.user(name)
	switch {
	case u == nil:
		bcrypt.CompareHashAndPassword(a.dummy, pw)
		a.fail(ip, name, via, "unknown user")
	case u.Password == "":
		bcrypt.CompareHashAndPassword(a.dummy, pw)
		a.fail(ip, name, via, "user has no password (ssh keys only)")
	case bcrypt.CompareHashAndPassword([]byte(u.Password), pw) != nil:
		a.fail(ip, name, via, "wrong password")
	default:
		return u, nil
	}
	return nil, ErrLoginFailed
}

// publicKey checks an SSH public key. A key that is not the user's is
// not counted as a failure (clients offer several keys); the caller
// counts one failure for a connection whose authentication failed.
func (a *authenticator) publicKey(ip, name string, key ssh.PublicKey) (*configs.User, error) {
	if a.isBlocked(ip, name) {
		a.refused.Add(1)
		return nil, ErrLoginBlocked
	}
	u := a.user(name)
	if u == nil {
		return nil, ErrLoginFailed
	}
	kb := key.Marshal()
	for _, k := range u.SSHPublicKeys() {
		if kk := k.Marshal(); len(kk) == len(kb) && subtle.ConstantTimeCompare(kk, kb) == 1 {
			return u, nil
		}
	}
	return nil, ErrLoginFailed
}
