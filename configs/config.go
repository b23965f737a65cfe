package configs

import (
	_ "embed"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"
)

//go:embed example.toml
var exampleTOML string

// ExampleTOML returns a copy of the embedded example.toml: the commented
// reference config that Default parses and `make run` starts with.
func ExampleTOML() []byte { return []byte(exampleTOML) }

// Default returns the parsed embedded example.toml: listen for VMs on
// 127.0.0.1:13370 and allow loopback targets only. It panics only if the
// embedded file is broken, which a test rules out. Each call returns a new
// Config.
func Default() *Config {
	c, err := Parse("example.toml", []byte(exampleTOML))
	if err != nil {
		panic(fmt.Sprintf("configs: embedded example.toml is broken: %v", err))
	}
	return c
}

// Config is a parsed and validated vspc-bridge configuration. Parse fills in
// a default for every key the file leaves out. A Config is immutable after
// Parse: callers must not modify it (or the Routes it hands out), and may
// then share it between goroutines.
type Config struct {
	VSPC    VSPC    `toml:"vspc"`
	VMotion VMotion `toml:"vmotion"`
	Policy  Policy  `toml:"policy"`
	Log     Log     `toml:"log"`
	Routes  []Route `toml:"route"`
	Remote  Remote  `toml:"remote"` // remote console access (remote.go)
	Users   []User  `toml:"user"`   // remote console users (remote.go)
	Source  string  `toml:"-"`      // file name the config came from

	// Operating: the admin endpoint and console alerts (admin.go).
	Admin      Admin       `toml:"admin"`
	Alerts     Alerts      `toml:"alerts"`
	AlertRules []AlertRule `toml:"alert"`

	// Web is the web console (web.go).
	Web Web `toml:"web"`
	// Cluster: several bridges as one on etcd (cluster.go); nil (no
	// [cluster] table) = a single node.
	Cluster *Cluster `toml:"cluster,omitempty"`

	allow *Allow // parsed Policy.ConnectAllow
}

// VSPC is the [vspc] table: the listener ESXi hosts connect to.
type VSPC struct {
	// Listen is the host:port of the plain telnet listener. Required unless
	// TLSListen is set.
	Listen string `toml:"listen"`
	// TLSListen is the host:port of a telnet-over-TLS listener (telnets://);
	// optional. TLSCert and TLSKey are PEM file paths, required with it.
	TLSListen string `toml:"tls_listen"`
	TLSCert   string `toml:"tls_cert"`
	TLSKey    string `toml:"tls_key"`
	// ProxyURI is the vSPC URI VMs are configured with to reach us; use
	// Config.ProxyURI for the effective value.
	ProxyURI string `toml:"proxy_uri"`
	// HandshakeTimeout bounds the time from accept until WILL-PROXY or
	// WONT-PROXY. Default 10s.
	HandshakeTimeout Duration `toml:"handshake_timeout"`
	// IdentifyTimeout is how long to wait for VM-VC-UUID and VM-NAME after
	// DO-PROXY before deciding. Default 2s.
	IdentifyTimeout Duration `toml:"identify_timeout"`
	// MaxSessions bounds concurrent VM connections; over it new connections
	// are closed. Default 20000.
	MaxSessions int `toml:"max_sessions"`
	// MaxSubnegotiation bounds one SB in bytes; a longer one closes that
	// connection. 64..65536, default 4096.
	MaxSubnegotiation int `toml:"max_subnegotiation"`
	// GracePeriod is how long a VM port (and its remote connection) stays
	// after its VM connection drops, waiting for a reconnect. 0 disables.
	// Default 2m.
	GracePeriod Duration `toml:"grace_period"`
	// Keepalive is the TCP keepalive period on VM connections; 0 disables.
	// Default 30s.
	Keepalive Duration `toml:"keepalive"`
	// ParkAfter is how long a VM or device connection stays idle before
	// it gives up its goroutine (package park; Linux: one epoll set). 0
	// never parks. Default 5s.
	ParkAfter Duration `toml:"park_after"`
}

// VMotion is the [vmotion] table: live-migration hand-over.
type VMotion struct {
	// Enabled false answers every VMOTION-BEGIN with VMOTION-NOTNOW.
	// Default true.
	Enabled bool `toml:"enabled"`
	// Buffer bounds, per VM, the data held for the VM during a hand-over or
	// reconnect. 4KiB..1GiB, default 1MiB.
	Buffer Size `toml:"buffer"`
	// FlushTimeout bounds the time to flush data already accepted for the VM
	// before VMOTION-GOAHEAD; past it we answer NOTNOW. Must be below 5s
	// (ESXi's vmotionLimit). Default 3s.
	FlushTimeout Duration `toml:"flush_timeout"`
	// PeerTimeout is how long a GOAHEAD secret waits for VMOTION-PEER from
	// the destination host. Default 3m.
	PeerTimeout Duration `toml:"peer_timeout"`
	// CompleteTimeout is how long after VMOTION-PEER-OK to wait for
	// VMOTION-COMPLETE before dropping the new connection. Default 30s.
	CompleteTimeout Duration `toml:"complete_timeout"`
}

// Policy is the [policy] table: what VMs may do.
type Policy struct {
	// ConnectAllow lists the targets client-direction VMs may reach (see
	// Allow for the grammar); use Config.Allow for the parsed form.
	// Default empty: nothing.
	ConnectAllow []string `toml:"connect_allow"`
	// Directions lists the accepted DO-PROXY directions, "client" and/or
	// "server". Default both.
	Directions []string `toml:"directions"`
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// reconnects to a remote. Defaults 200ms and 30s.
	ReconnectMin Duration `toml:"reconnect_min"`
	ReconnectMax Duration `toml:"reconnect_max"`
	// DialTimeout bounds one connection attempt to a remote. Default 5s.
	DialTimeout Duration `toml:"dial_timeout"`
}

// Directions accepted in Policy.Directions.
const (
	DirectionClient = "client"
	DirectionServer = "server"
)

// AllowsDirection reports whether dir ("client" or "server") is listed in
// Directions.
func (p *Policy) AllowsDirection(dir string) bool { return slices.Contains(p.Directions, dir) }

// Log holds the settings of the "log" table.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn or error; default info
	Format string `toml:"format"` // text or json; default text
}

// SlogLevel returns Level as a slog.Level (info if unset).
func (l Log) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// defaults returns the Config every parse starts from.
func defaults() Config {
	return Config{
		VSPC: VSPC{
			HandshakeTimeout:  Duration{10 * time.Second},
			IdentifyTimeout:   Duration{2 * time.Second},
			MaxSessions:       20000,
			MaxSubnegotiation: 4096,
			GracePeriod:       Duration{2 * time.Minute},
			Keepalive:         Duration{30 * time.Second},
			ParkAfter:         Duration{5 * time.Second},
		},
		VMotion: VMotion{
			Enabled:         true,
			Buffer:          1 * MiB,
			FlushTimeout:    Duration{3 * time.Second},
			PeerTimeout:     Duration{3 * time.Minute},
			CompleteTimeout: Duration{30 * time.Second},
		},
		Policy: Policy{
			ConnectAllow: []string{},
			Directions:   []string{DirectionClient, DirectionServer},
			ReconnectMin: Duration{200 * time.Millisecond},
			ReconnectMax: Duration{30 * time.Second},
			DialTimeout:  Duration{5 * time.Second},
		},
		Log:    Log{Level: "info", Format: "text"},
		Remote: defaultRemote(),
		Admin:  adminDefaults(),
		Alerts: alertsDefaults(),
		Web:    webDefaults(),
	}
}

// Load reads the config file at path and parses it with Parse, using path
// as the file name in errors and Config.Source.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("configs: %w", err)
	}
	return Parse(path, data)
}

// ProxyURI returns the vSPC URI VMs are configured with: [vspc] proxy_uri
// if set, else "telnet://" + listen (or "telnets://" + tls_listen when only
// the TLS listener is configured). When the listen host is empty or
// unspecified (":13370", "0.0.0.0:13370") the derived URI is not dialable by
// a VM; such configs should set proxy_uri.
func (c *Config) ProxyURI() string {
	switch {
	case c.VSPC.ProxyURI != "":
		return c.VSPC.ProxyURI
	case c.VSPC.Listen != "":
		return "telnet://" + c.VSPC.Listen
	case c.VSPC.TLSListen != "":
		return "telnets://" + c.VSPC.TLSListen
	}
	return ""
}

// Allow returns the parsed [policy] connect_allow. It is never nil.
func (c *Config) Allow() *Allow {
	if c.allow == nil {
		return &Allow{}
	}
	return c.allow
}
