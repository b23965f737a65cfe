package configs

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
)

// Web is the [web] table: the web console (package web), a browser front
// door of remote access with the same [[user]] tables, rights and lock
// modes.
type Web struct {
	// Listen is the host:port of the web console's HTTP(S) listener. ""
	// (default) turns it off. A host that is not a loopback address needs
	// TLSCert and at least one [[user]] with a password. Set, it turns
	// remote access on (Remote.Enabled) unless the file says
	// [remote] enabled = false, which is then an error.
	Listen string `toml:"listen"`
	// TLSCert and TLSKey are PEM files; with both the console speaks HTTPS
	// only and its session cookie is Secure (named __Host-vspc_session).
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// Origins are more origins ("https://console.example.com") that may
	// open consoles and post forms: those a reverse proxy shows to
	// browsers. The console's own origin (the Host it is reached by) is
	// always allowed. Default [].
	Origins []string `toml:"origins"`
	// SecureCookie marks the session cookie Secure without TLSCert: for a
	// console behind a reverse proxy that terminates HTTPS. Default false
	// (true with TLSCert).
	SecureCookie bool `toml:"secure_cookie"`
	// SessionIdle ends a login session that has had no request and no
	// open console for that long; SessionMax ends any session that long
	// after its login, closing its consoles. Defaults "30m" and "12h".
	SessionIdle Duration `toml:"session_idle"`
	SessionMax  Duration `toml:"session_max"`
	// MaxSessions bounds the logged-in browser sessions (1..100000, default
	// 1000); past it the oldest is logged out. MaxConsoles bounds the
	// consoles one user has open at once over all sessions (1..1000,
	// default 32).
	MaxSessions int `toml:"max_sessions"`
	MaxConsoles int `toml:"max_consoles"`
	// Ping is how often an open console is pinged (a WebSocket ping the
	// browser answers), which keeps reverse proxies from closing it as
	// idle and finds dead browsers: no answer within Ping closes it.
	// 1s..10m, default "20s".
	Ping Duration `toml:"ping"`
	// WatchScrollback is how much recent traffic each port joined to a
	// device or remote keeps for watchers (both directions), which a new
	// watch replays first. 0 keeps none. 0..16MiB, default "16KiB".
	WatchScrollback Size `toml:"watch_scrollback"`

	origins []string // parsed Origins: scheme://host[:port], lower case
}

// Web limits enforced by validation.
const (
	MaxWebSessions = 100000
	MaxWebConsoles = 1000
	MinWebPing     = time.Second
	MaxWebPing     = 10 * time.Minute
)

// OriginList returns the parsed Origins, normalised to lower-case
// scheme://host[:port].
func (w *Web) OriginList() []string { return append([]string(nil), w.origins...) }

// TLS reports whether the console serves HTTPS.
func (w *Web) TLS() bool { return w.TLSCert != "" }

func webDefaults() Web {
	return Web{
		Origins:     []string{},
		SessionIdle: Duration{30 * time.Minute},
		SessionMax:  Duration{12 * time.Hour},
		MaxSessions: 1000,
		MaxConsoles: 32,
		Ping:        Duration{20 * time.Second},

		WatchScrollback: 16 * KiB,
	}
}

// validateWeb checks [web] against the rest of the config: it is a door of
// remote access, so it turns remote access on (an explicit [remote]
// enabled = false is an error), and off loopback it needs TLS and a user
// who can log in with a password.
func (d *decoder) validateWeb(c *Config) {
	w := &c.Web
	if w.Listen != "" {
		if err := checkListen(w.Listen); err != nil {
			d.fail("web.listen", err)
		} else {
			for _, o := range []struct{ key, addr string }{
				{"vspc.listen", c.VSPC.Listen}, {"vspc.tls_listen", c.VSPC.TLSListen}, {"admin.listen", c.Admin.Listen},
				{"remote.telnet_listen", c.Remote.TelnetListen}, {"remote.telnets_listen", c.Remote.TelnetsListen}, {"remote.ssh_listen", c.Remote.SSHListen},
			} {
				if listenersClash(w.Listen, o.addr) {
					d.errorf("web.listen", "%s clashes with %s %s: give the web console its own port", w.Listen, o.key, o.addr)
				}
			}
			if !isLoopbackListen(w.Listen) {
				if w.TLSCert == "" && !d.bad["web.tls_cert"] {
					d.errorf("web.listen", "%s is not a loopback address: set tls_cert and tls_key (passwords and console traffic must not cross the network in clear)", w.Listen)
				}
				if !hasPasswordUser(c.Users) {
					d.errorf("web.listen", "%s is not a loopback address: add a [[user]] with a password (nobody could log in)", w.Listen)
				}
			}
		}
		// The web console is a door of remote access: it turns remote
		// access on, unless the file says enabled = false.
		switch {
		case c.Remote.Enabled || d.bad["remote.enabled"]:
		case !d.set["remote.enabled"]:
			c.Remote.Enabled = true
		default:
			d.errorf("remote.enabled", "false, but [web] listen is set: the web console shows remote access's consoles; remove this line ([web] listen turns remote access on) or set enabled = true")
		}
	}
	switch {
	case w.TLSCert != "" && w.TLSKey == "" && !d.bad["web.tls_key"]:
		d.errorf("web.tls_cert", "tls_key is missing: tls_cert and tls_key go together")
	case w.TLSCert == "" && w.TLSKey != "" && !d.bad["web.tls_cert"]:
		d.errorf("web.tls_key", "tls_cert is missing: tls_cert and tls_key go together")
	}
	w.origins = nil
	for i, o := range w.Origins {
		key := indexKey("web.origins", i)
		if d.bad[key] {
			continue
		}
		norm, err := parseOrigin(o)
		if err != nil {
			d.fail(key, err)
			continue
		}
		w.origins = append(w.origins, norm)
	}
	d.positive("web.session_idle", w.SessionIdle)
	d.positive("web.session_max", w.SessionMax)
	if w.SessionIdle.Duration > 0 && w.SessionIdle.Duration > w.SessionMax.Duration && !d.bad["web.session_max"] && !d.bad["web.session_idle"] {
		d.errorf("web.session_idle", "%v is longer than session_max %v", w.SessionIdle.Duration, w.SessionMax.Duration)
	}
	d.intRange("web.max_sessions", w.MaxSessions, 1, MaxWebSessions)
	d.intRange("web.max_consoles", w.MaxConsoles, 1, MaxWebConsoles)
	if !d.bad["web.ping"] && (w.Ping.Duration < MinWebPing || w.Ping.Duration > MaxWebPing) {
		d.errorf("web.ping", "%v is out of range %v..%v", w.Ping.Duration, MinWebPing, MaxWebPing)
	}
	d.sizeRange("web.watch_scrollback", w.WatchScrollback, 0, MaxScrollback)
}

func hasPasswordUser(users []User) bool {
	for _, u := range users {
		if u.Password != "" {
			return true
		}
	}
	return false
}

// parseOrigin checks a browser origin, "https://host[:port]", and returns
// it in the form browsers send (lower case, no default port).
func parseOrigin(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%q: not a URL: %w", s, err)
	}
	scheme := strings.ToLower(u.Scheme)
	switch {
	case scheme != "http" && scheme != "https":
		return "", fmt.Errorf(`%q: want an origin such as "https://console.example.com" (http or https)`, s)
	case u.Host == "":
		return "", fmt.Errorf("%q: no host", s)
	case u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("%q: an origin is scheme://host[:port], without user, path, query or fragment", s)
	}
	host := strings.ToLower(u.Hostname())
	if err := target.CheckHost(strings.Trim(host, "[]")); err != nil {
		return "", fmt.Errorf("%q: %w", s, err)
	}
	port := u.Port()
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, nil
}
