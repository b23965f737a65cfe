// Package memprobe measures the bridge's memory per idle VM port in
// process: clients are bare TCP connections that write a complete
// handshake and never read, so nearly all memory measured is the server's.
package memprobe

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

func hello(i int, service string) []byte {
	var b []byte
	b = append(b, 0xff, 0xfb, 0x25, 0xff, 0xfb, 0xe8)
	b = vspc.AppendExt(b, vspc.KnownSuboptions1, []byte{0, 1, 2, 3, 0x46, 0x47, 0x49, 0x50, 0x51, 0x52, 0x53})
	b = vspc.AppendExt(b, vspc.DoProxy, []byte("C"+service))
	uuid := fmt.Sprintf("50 00 00 00 00 00 00 00-00 00 %02x %02x %02x %02x %02x %02x", i>>24&255, i>>16&255, i>>8&255, i&255, 0, 1)
	b = vspc.AppendExt(b, vspc.VMVCUUID, []byte(uuid))
	b = vspc.AppendExt(b, vspc.VMName, []byte(fmt.Sprintf("vm-%05d", i)))
	return b
}

// TestIdlePortMemory reports heap and stack per idle port (set
// MEMPROBE_N; default 2000). It asserts only that every port came up.
func TestIdlePortMemory(t *testing.T) {
	n := 2000
	if s := os.Getenv("MEMPROBE_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	remote, _ := net.Listen("tcp", "127.0.0.1:0")
	defer remote.Close()
	withRemote := os.Getenv("MEMPROBE_REMOTE") != ""
	var accepted []net.Conn
	if withRemote {
		go func() {
			for {
				c, err := remote.Accept()
				if err != nil {
					return
				}
				accepted = append(accepted, c)
			}
		}()
	}
	cfg, err := configs.Parse("x", []byte("[vspc]\nlisten=\"127.0.0.1:0\"\n[policy]\nconnect_allow=[\"127.0.0.0/8\"]\nreconnect_min=\"30s\"\nreconnect_max=\"60s\"\n[log]\nlevel=\"error\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	br := bridge.New(cfg, nil)
	srv := vspc.NewServer(vspc.Config{Bridger: br})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(context.Background(), ln)
	defer func() { srv.Close(); br.Close() }()
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	g0 := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		service := fmt.Sprintf("tcp://127.0.%d.%d:1", i/250, i%250+1)
		if withRemote {
			service = "tcp://" + remote.Addr().String()
		}
		c.Write(hello(i, service))
		conns = append(conns, c)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(srv.Ports()) < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := len(srv.Ports()); got < n {
		t.Fatalf("%d of %d ports", got, n)
	}
	time.Sleep(500 * time.Millisecond)
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms1)
	per := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / float64(n) }
	t.Logf("%d ports (remote connected: %v): goroutines/port %.2f, heap in use/port %.0f B, stacks/port %.0f B, heap+stacks %.0f B",
		n, withRemote, float64(runtime.NumGoroutine()-g0)/float64(n), per(ms0.HeapInuse, ms1.HeapInuse), per(ms0.StackInuse, ms1.StackInuse),
		per(ms0.HeapInuse+ms0.StackInuse, ms1.HeapInuse+ms1.StackInuse))
	for _, c := range conns {
		c.Close()
	}
}
