package target_test

import (
	"fmt"

	"github.com/vspc-bridge/vspc-bridge/devices/target"
)

func ExampleParse() {
	for _, uri := range []string{
		"nport://192.168.127.254",
		"serial:///dev/ttyUSB0?baud=115200&parity=none&databits=8&stopbits=1&flow=none",
		"/dev/ttyS0",
		"rfc2217://ts1:7001?baud=57600&stopbits=2",
		"telnet://console-7.lab",
		"foo://x",
	} {
		t, err := target.Parse(uri)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%-7v %-22s %-12v key %s\n", t.Kind, t.Addr(), t.Settings, t.Key())
	}
	// Output:
	// nport   192.168.127.254:4001   ? ???        key tcp:192.168.127.254:4001
	// serial  /dev/ttyUSB0           115200 8N1   key serial:/dev/ttyUSB0
	// serial  /dev/ttyS0             ? ???        key serial:/dev/ttyS0
	// rfc2217 ts1:7001               57600 ??2    key tcp:ts1:7001
	// telnet  console-7.lab:23       ? ???        key tcp:console-7.lab:23
	// target: unknown scheme "foo" in "foo://x" (want tcp, nport, telnet, rfc2217, serial or an absolute device path)
}
