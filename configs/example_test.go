package configs_test

import (
	"fmt"
	"net/netip"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

func ExampleParse() {
	cfg, err := configs.Parse("bridge.toml", []byte(`
[vspc]
listen = "0.0.0.0:13370"
proxy_uri = "telnet://vspc.lab.example:13370"

[policy]
connect_allow = ["10.20.0.0/16:4001-4016"]

[[route]]
service = "lab-router-*"
device = "rfc2217://ser2net.lab.example:2001"
settings = "115200 8N1"
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	r, ok := cfg.MatchRoute(configs.RouteQuery{ServiceURI: "lab-router-3"})
	fmt.Println(cfg.ProxyURI(), cfg.VSPC.HandshakeTimeout, ok, r.Name, r.Target(), r.Settings())
	// Output: telnet://vspc.lab.example:13370 10s true lab-router-* rfc2217://ser2net.lab.example:2001 115200 8N1
}

func ExampleParse_errors() {
	_, err := configs.Parse("bridge.toml", []byte(`[vspc]
listen = "127.0.0.1:13370"
handshake_timeout = "10x"
max_sessions = "many"

[vmotion]
flush_timeout = "6s"
`))
	fmt.Println(err)
	// Output:
	// configs: bridge.toml:3: vspc.handshake_timeout: time: unknown unit "x" in duration "10x"
	// configs: bridge.toml:4: vspc.max_sessions: want an integer, got string "many"
	// configs: bridge.toml:7: vmotion.flush_timeout: 6s must be below 5s (ESXi gives up on a vMotion hand-over after 5s)
}

func ExampleAllow() {
	allow, err := configs.ParseAllow([]string{"10.1.0.0/16:4001-4004", "[::1]/128", "nport-*.lab:4001"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(allow.AllowAddr(netip.MustParseAddr("10.1.2.3"), 4002))
	fmt.Println(allow.AllowAddr(netip.MustParseAddr("::ffff:10.1.2.3"), 4002)) // IPv4-mapped
	fmt.Println(allow.AllowAddr(netip.MustParseAddr("10.1.2.3"), 23))
	fmt.Println(allow.AllowName("NPORT-7.lab", 4001))
	fmt.Println(allow.AllowName("::1", 22)) // IP literals use the address rules
	// Output:
	// true
	// true
	// false
	// true
	// true
}
