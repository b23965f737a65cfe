package configs

import (
	"fmt"
	"net"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/crypto/ssh"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
	"github.com/vspc-bridge/vspc-bridge/internal/vcuuid"
)

// Remote is the [remote] table: remote access to the consoles of
// direction-server VM serial ports (package remote). Users are [[user]]
// tables (Config.Users).
type Remote struct {
	// Enabled turns remote access on. When false, a direction-server port
	// without a [[route]] is refused as before. Default false, or true
	// when [web] listen is set and the file does not set enabled.
	Enabled bool `toml:"enabled"`
	// Bind is the address per-VM listeners bind to. Default "127.0.0.1".
	Bind string `toml:"bind"`
	// PortRange is "LO-HI": per-VM ports for service URIs that name no port
	// (a plain name such as "vSPC.py" or "web-1?port=com2"). Default ""
	// (such ports get no per-VM listener; the front door still reaches
	// them).
	PortRange string `toml:"port_range"`
	// PortScheme is what a per-VM listener from PortRange speaks: "telnet",
	// "telnets" (needs TLSCert) or "tcp" (raw). Default "telnet".
	PortScheme string `toml:"port_scheme"`
	// StateFile keeps the PortRange assignments across restarts (JSON).
	// Default "" (kept in memory only).
	StateFile string `toml:"state_file"`
	// TelnetListen and TelnetsListen are the front door's host:port over
	// plain telnet and telnet over TLS; SSHListen is the SSH front door.
	// Each defaults to "" (off).
	TelnetListen  string `toml:"telnet_listen"`
	TelnetsListen string `toml:"telnets_listen"`
	SSHListen     string `toml:"ssh_listen"`
	// SSHHostKeys are private key files (OpenSSH or PEM). A missing file is
	// generated on first start: RSA 3072 if its name contains "rsa", ECDSA
	// P-256 if "ecdsa", otherwise Ed25519. Required with SSHListen.
	SSHHostKeys []string `toml:"ssh_host_keys"`
	// TLSCert and TLSKey are PEM files for telnets listeners.
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// Open lets telnet and tcp listeners (front door and per-VM) skip the
	// login: anyone who connects gets read-write access to every console.
	// Only allowed when those listeners are on loopback addresses, unless
	// OpenNonLoopback is also true. Default false.
	Open            bool `toml:"open"`
	OpenNonLoopback bool `toml:"open_non_loopback"`
	// Scrollback is how much recent console output a newly attached client
	// gets first. 0..16MiB, default 16KiB.
	Scrollback Size `toml:"scrollback"`
	// LogDir is where console logs are written, one file per VM serial
	// port; "" (default) writes none. LogMaxSize is the size at which a log
	// rotates (64KiB..1GiB, default 10MiB); LogMaxFiles is how many rotated
	// files are kept besides the current one (0..1000, default 5).
	// LogBuffer bounds the output waiting for a slow disk (64KiB..1GiB,
	// default 1MiB); beyond it output is lost from the log (counted, and
	// marked in the file), never from the console.
	LogDir      string `toml:"log_dir"`
	LogMaxSize  Size   `toml:"log_max_size"`
	LogMaxFiles int    `toml:"log_max_files"`
	LogBuffer   Size   `toml:"log_buffer"`
	// ClientQueue bounds the output waiting for one client (4KiB..1GiB,
	// default 256KiB). What happens when it is full is ClientOverflow.
	ClientQueue Size `toml:"client_queue"`
	// ClientOverflow is what a full client queue does: "pause" (default)
	// stops reading from the VM until the client has caught up, so that
	// every client gets every byte; "drop" tells the client and
	// disconnects it at once, so that no client ever slows the VM.
	ClientOverflow string `toml:"client_overflow"`
	// ClientStall is how long a client whose queue is full may go without
	// taking any output before it is told and dropped, and the console
	// resumes for the others ("pause" only). Default "10s".
	ClientStall Duration `toml:"client_stall"`
	// Escape is the escape sequence of an interactive session, in caret
	// notation ("^E" is Ctrl-E) followed by literal characters; 1..4 bytes.
	// The command character follows it ("." detach, "b" BREAK, "w" who,
	// "s" read-only, "a" read-write, "?" help). "" disables escapes.
	// Default "^Ec".
	Escape string `toml:"escape"`
	// MaxClients bounds the clients attached to one console (1..1000,
	// default 16); MaxSessions bounds all remote connections (1..100000,
	// default 20000: a console logger on every console the bridge holds,
	// and operators); MaxUnauthenticated bounds the connections that have
	// not logged in yet (1..100000, default 256), so that a flood of them
	// cannot crowd out users.
	MaxClients         int `toml:"max_clients"`
	MaxSessions        int `toml:"max_sessions"`
	MaxUnauthenticated int `toml:"max_unauthenticated"`
	// LoginTimeout bounds the time from connect to a successful login.
	// Default "60s".
	LoginTimeout Duration `toml:"login_timeout"`
	// LoginMaxFailures failed logins within LoginWindow from one address,
	// or for one user name, block further attempts from that address (or
	// for that name) until the window has passed. Defaults 5 and "5m".
	LoginMaxFailures int      `toml:"login_max_failures"`
	LoginWindow      Duration `toml:"login_window"`
	// LoginDelay is the pause after a failed login before the next prompt
	// or answer. Default "1s".
	LoginDelay Duration `toml:"login_delay"`

	portLo, portHi int
	escape         []byte
}

// Remote limits enforced by validation.
const (
	MaxScrollback     = 16 * MiB
	MinLogMaxSize     = 64 * KiB
	MinLogBuffer      = 64 * KiB
	MinClientQueue    = 4 * KiB
	MaxRemoteBuffer   = 1 * GiB
	MaxLogFiles       = 1000
	MaxClientsLimit   = 1000
	MaxRemoteSessions = 100000
	MaxEscapeLen      = 4
)

// Client overflow policies ([remote] client_overflow).
const (
	OverflowPause = "pause"
	OverflowDrop  = "drop"
)

// Access modes of an access list entry.
const (
	AccessRO = "ro"
	AccessRW = "rw"
)

// PortRangeBounds returns the bounds of port_range, or 0, 0 when it is not set.
func (r *Remote) PortRangeBounds() (lo, hi int) { return r.portLo, r.portHi }

// EscapeBytes returns the parsed escape sequence (nil when disabled).
func (r *Remote) EscapeBytes() []byte { return append([]byte(nil), r.escape...) }

// User is one [[user]] table: who may log in to the remote console front
// door and per-VM ports, and which consoles they reach.
type User struct {
	// Name is the login name: unique, no spaces, no '+' (SSH logins are
	// "name+vm").
	Name string `toml:"name"`
	// Password is a bcrypt hash ("$2a$…", "$2b$…", "$2y$…"); "" disables
	// password login.
	Password string `toml:"password"`
	// SSHKeys are authorized_keys lines ("ssh-ed25519 AAAA… comment").
	SSHKeys []string `toml:"ssh_keys"`
	// Access lists the consoles the user reaches; the first entry whose vm
	// pattern matches wins.
	Access []Access `toml:"access"`

	keys []ssh.PublicKey
}

// Access is one access list entry of a user.
type Access struct {
	// VM is a glob (path.Match) matched against the VM name and against
	// its VC UUID (8-4-4-4-12, lower case).
	VM string `toml:"vm"`
	// Mode is "ro" (watch) or "rw" (watch and type).
	Mode string `toml:"mode"`
}

// SSHPublicKeys returns the parsed SSHKeys.
func (u *User) SSHPublicKeys() []ssh.PublicKey { return u.keys }

// Right returns the mode of the first access entry matching the VM (by
// name or VC UUID), and false when none does.
func (u *User) Right(vmName, vcUUID string) (string, bool) {
	uuid, _ := vcuuid.Normalize(vcUUID)
	for _, a := range u.Access {
		if vmName != "" && globMatch(a.VM, vmName) || uuid != "" && globMatch(strings.ToLower(a.VM), uuid) {
			return a.Mode, true
		}
	}
	return "", false
}

// LookupUser returns the [[user]] named name.
func (c *Config) LookupUser(name string) (*User, bool) {
	for i := range c.Users {
		if c.Users[i].Name == name {
			return &c.Users[i], true
		}
	}
	return nil, false
}

func defaultRemote() Remote {
	return Remote{
		Bind:               "127.0.0.1",
		SSHHostKeys:        []string{},
		PortScheme:         "telnet",
		Scrollback:         16 * KiB,
		LogMaxSize:         10 * MiB,
		LogMaxFiles:        5,
		LogBuffer:          1 * MiB,
		ClientQueue:        256 * KiB,
		ClientOverflow:     OverflowPause,
		ClientStall:        Duration{10 * time.Second},
		Escape:             "^Ec",
		MaxClients:         16,
		MaxSessions:        20000,
		MaxUnauthenticated: 256,
		LoginTimeout:       Duration{60 * time.Second},
		LoginMaxFailures:   5,
		LoginWindow:        Duration{5 * time.Minute},
		LoginDelay:         Duration{time.Second},
	}
}

// ParseEscape parses an escape sequence in caret notation: "^X" is
// Control-X (X one of @, A-Z, a-z, [, \, ], ^, _; "^?" is DEL), "^^" is
// Control-^, any other character is itself.
func ParseEscape(s string) ([]byte, error) {
	var out []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f {
			return nil, fmt.Errorf("escape %q: write control characters in caret notation (\"^E\")", s)
		}
		if c != '^' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(s) {
			return nil, fmt.Errorf("escape %q: '^' needs a character after it", s)
		}
		i++
		x := s[i]
		switch {
		case x == '?':
			out = append(out, 0x7f)
		case x >= 'a' && x <= 'z':
			out = append(out, x-'a'+1)
		case x >= '@' && x <= '_':
			out = append(out, x-'@')
		default:
			return nil, fmt.Errorf("escape %q: ^%c is not a control character", s, x)
		}
	}
	if len(out) > MaxEscapeLen {
		return nil, fmt.Errorf("escape %q: %d bytes, at most %d", s, len(out), MaxEscapeLen)
	}
	return out, nil
}

// isLoopbackHost reports whether host is a loopback IP or "localhost".
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func (d *decoder) sizeRange(key string, v, lo, hi Size) {
	if !d.bad[key] && (v < lo || v > hi) {
		d.errorf(key, "%s is out of range %s..%s", v, lo, hi)
	}
}

func (d *decoder) intRange(key string, v, lo, hi int) {
	if !d.bad[key] && (v < lo || v > hi) {
		d.errorf(key, "%d is out of range %d..%d", v, lo, hi)
	}
}

func (d *decoder) validateRemote(r *Remote, users []User) {
	if r.Bind == "" {
		d.errorf("remote.bind", `must not be empty: an IP address such as "127.0.0.1", or "0.0.0.0" for all interfaces`)
	} else if err := target.CheckHost(r.Bind); err != nil {
		d.fail("remote.bind", err)
	}
	if r.PortRange != "" {
		lo, hi, err := parseRemotePortRange(r.PortRange)
		if err != nil {
			d.fail("remote.port_range", err)
		}
		r.portLo, r.portHi = lo, hi
	}
	switch r.PortScheme {
	case "telnet", "tcp":
	case "telnets":
		if r.TLSCert == "" && !d.bad["remote.tls_cert"] {
			d.errorf("remote.port_scheme", `"telnets" needs tls_cert and tls_key`)
		}
	default:
		d.errorf("remote.port_scheme", `%q: want "telnet", "telnets" or "tcp"`, r.PortScheme)
	}
	for _, l := range []struct{ key, val string }{
		{"remote.telnet_listen", r.TelnetListen}, {"remote.telnets_listen", r.TelnetsListen}, {"remote.ssh_listen", r.SSHListen},
	} {
		if l.val != "" {
			if err := checkListen(l.val); err != nil {
				d.fail(l.key, err)
			}
		}
	}
	if r.TelnetsListen != "" && r.TLSCert == "" && !d.bad["remote.tls_cert"] {
		d.errorf("remote.telnets_listen", "needs tls_cert and tls_key")
	}
	switch {
	case r.TLSCert != "" && r.TLSKey == "" && !d.bad["remote.tls_key"]:
		d.errorf("remote.tls_cert", "tls_key is missing: tls_cert and tls_key go together")
	case r.TLSCert == "" && r.TLSKey != "" && !d.bad["remote.tls_cert"]:
		d.errorf("remote.tls_key", "tls_cert is missing: tls_cert and tls_key go together")
	}
	if r.SSHListen != "" && len(r.SSHHostKeys) == 0 && !d.bad["remote.ssh_host_keys"] {
		d.errorf("remote.ssh_listen", `needs ssh_host_keys: private key file(s), generated on first start if missing, such as ["/var/lib/vspc-bridge/ssh_host_ed25519_key"]`)
	}
	for i, k := range r.SSHHostKeys {
		if k == "" && !d.bad[indexKey("remote.ssh_host_keys", i)] {
			d.errorf(indexKey("remote.ssh_host_keys", i), "empty path")
		}
	}
	if r.Open && !r.OpenNonLoopback {
		for _, l := range []struct{ key, hostport string }{
			{"remote.bind", net.JoinHostPort(r.Bind, "0")}, {"remote.telnet_listen", r.TelnetListen}, {"remote.telnets_listen", r.TelnetsListen},
		} {
			if l.hostport == "" {
				continue
			}
			if host, _, err := net.SplitHostPort(l.hostport); err == nil && !isLoopbackHost(host) {
				d.errorf("remote.open", "open (no login) is only allowed on loopback listeners, and %s is %q; set open_non_loopback = true to allow it anyway", l.key, l.hostport)
			}
		}
	}
	d.sizeRange("remote.scrollback", r.Scrollback, 0, MaxScrollback)
	d.sizeRange("remote.log_max_size", r.LogMaxSize, MinLogMaxSize, MaxRemoteBuffer)
	d.sizeRange("remote.log_buffer", r.LogBuffer, MinLogBuffer, MaxRemoteBuffer)
	d.sizeRange("remote.client_queue", r.ClientQueue, MinClientQueue, MaxRemoteBuffer)
	d.intRange("remote.log_max_files", r.LogMaxFiles, 0, MaxLogFiles)
	d.intRange("remote.max_clients", r.MaxClients, 1, MaxClientsLimit)
	d.intRange("remote.max_sessions", r.MaxSessions, 1, MaxRemoteSessions)
	d.intRange("remote.max_unauthenticated", r.MaxUnauthenticated, 1, MaxRemoteSessions)
	switch r.ClientOverflow {
	case OverflowPause, OverflowDrop:
	default:
		if !d.bad["remote.client_overflow"] {
			d.errorf("remote.client_overflow", `%q: want "pause" (stop reading from the VM until the client catches up) or "drop" (disconnect the client)`, r.ClientOverflow)
		}
	}
	d.positive("remote.client_stall", r.ClientStall)
	d.intRange("remote.login_max_failures", r.LoginMaxFailures, 1, 1000)
	d.positive("remote.login_timeout", r.LoginTimeout)
	d.positive("remote.login_window", r.LoginWindow)
	d.nonNegative("remote.login_delay", r.LoginDelay)
	if esc, err := ParseEscape(r.Escape); err != nil {
		d.fail("remote.escape", err)
	} else {
		r.escape = esc
	}
	d.validateUsers(users)
}

// parsePortRange parses "LO-HI" (or a single port) with 1 <= LO <= HI <= 65535.
func parseRemotePortRange(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		b = a
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
		return 0, 0, fmt.Errorf("%q: want LO-HI with 1 <= LO <= HI <= 65535, such as \"7000-7099\"", s)
	}
	return lo, hi, nil
}

func (d *decoder) validateUsers(users []User) {
	names := map[string]int{}
	for i := range users {
		u := &users[i]
		uk := indexKey("user", i)
		switch {
		case u.Name == "":
			if !d.bad[uk+".name"] {
				d.errorf(uk+".name", "required")
			}
		case strings.ContainsAny(u.Name, "+:@/ \t") || strings.IndexFunc(u.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
			d.errorf(uk+".name", "%q: a user name cannot contain '+', ':', '@', '/', spaces or control characters", u.Name)
		}
		if j, dup := names[u.Name]; dup && u.Name != "" {
			d.errorf(uk+".name", "duplicate user %q (also user[%d])", u.Name, j)
		} else {
			names[u.Name] = i
		}
		if u.Password != "" {
			if _, err := bcrypt.Cost([]byte(u.Password)); err != nil {
				d.errorf(uk+".password", "not a bcrypt hash (want \"$2b$10$…\", as made by `htpasswd -nbBC 10 '' PASSWORD | cut -d: -f2`): %v", err)
			}
		}
		u.keys = nil
		for j, line := range u.SSHKeys {
			k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
			if err != nil {
				if !d.bad[indexKey(uk+".ssh_keys", j)] {
					d.errorf(indexKey(uk+".ssh_keys", j), "not an authorized_keys line (\"ssh-ed25519 AAAA… comment\"): %v", err)
				}
				continue
			}
			u.keys = append(u.keys, k)
		}
		if u.Password == "" && len(u.SSHKeys) == 0 && !d.bad[uk+".password"] && !d.bad[uk+".ssh_keys"] {
			d.errorf(uk, "user %q has neither password nor ssh_keys and could never log in", u.Name)
		}
		for j, a := range u.Access {
			ak := indexKey(uk+".access", j)
			if a.VM == "" {
				if !d.bad[ak+".vm"] {
					d.errorf(ak+".vm", `required: a glob on the VM name or VC UUID, such as "web-*" or "*"`)
				}
			} else if _, err := path.Match(a.VM, ""); err != nil {
				d.errorf(ak+".vm", "bad pattern %q: %v", a.VM, err)
			}
			switch a.Mode {
			case AccessRO, AccessRW:
			default:
				if !d.bad[ak+".mode"] {
					d.errorf(ak+".mode", `%q: want "ro" or "rw"`, a.Mode)
				}
			}
		}
	}
}
