package vc

import (
	"testing"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

// TestConfigRouteDevice: the audit names a route's device by where it is:
// tcp:// for nport:// too, the port filled in, and no line settings.
func TestConfigRouteDevice(t *testing.T) {
	c, err := configs.Parse("t.toml", []byte(`[vspc]
listen = "127.0.0.1:13370"
[[route]]
service = "a"
device = "nport://NPort-1.lab"
[[route]]
service = "b"
device = "serial:///dev/ttyUSB0?baud=115200"
[[route]]
service = "c"
device = "telnet://console.lab"
[[route]]
service = "d"
device = "/dev/ttyS0"
`))
	if err != nil {
		t.Fatal(err)
	}
	b := FromConfig(c)
	for service, want := range map[string]string{
		"a": "tcp://NPort-1.lab:4001",
		"b": "serial:///dev/ttyUSB0",
		"c": "telnet://console.lab:23",
		"d": "serial:///dev/ttyS0",
	} {
		r, ok := b.Route(RouteQuery{ServiceURI: service})
		if !ok || r.Name != service || r.Device != want {
			t.Errorf("Route(%q) = %+v, %v; want device %q", service, r, ok, want)
		}
	}
	if _, ok := b.Route(RouteQuery{ServiceURI: "e"}); ok {
		t.Error("a service no route names has a route")
	}
}
