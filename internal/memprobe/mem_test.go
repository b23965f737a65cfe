// Package memprobe measures the bridge's memory per idle VM port in
// process: clients are bare TCP connections that write a complete
// handshake and never read, so nearly all memory measured is the server's.
package memprobe

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
	"github.com/vspc-bridge/vspc-bridge/internal/park"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// remotesEnv, set to a count, makes the test binary the remote-systems
// helper instead of running tests (see remoteHelper).
const remotesEnv = "MEMPROBE_REMOTES_CHILD"

func TestMain(m *testing.M) {
	if s := os.Getenv(remotesEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err == nil {
			err = remoteHelper(n, os.Stdin, os.Stdout)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "memprobe remote helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	leaktest.Main(m, 5*time.Second)
}

// remoteHelper plays n remote systems, one listener each on 127.0.0.1,
// in a process of its own so that their memory is not measured. It
// prints each listener's port on a line, holds every connection it
// accepts without reading, and returns when stdin closes.
func remoteHelper(n int, stdin io.Reader, stdout io.Writer) error {
	w := bufio.NewWriter(stdout)
	var held []net.Conn
	accepted := make(chan net.Conn, 64)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				accepted <- c
			}
		}()
		fmt.Fprintln(w, ln.Addr().(*net.TCPAddr).Port)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, stdin); close(eof) }()
	for {
		select {
		case c := <-accepted:
			held = append(held, c)
		case <-eof:
			return nil
		}
	}
}

// startRemotes starts the helper with n remotes and returns their ports.
func startRemotes(t *testing.T, n int) []int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), remotesEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	ports := make([]int, 0, n)
	for len(ports) < n && sc.Scan() {
		p, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			t.Fatalf("remote helper said %q", sc.Text())
		}
		ports = append(ports, p)
	}
	if len(ports) < n {
		t.Fatalf("remote helper started %d of %d remotes: %v", len(ports), n, sc.Err())
	}
	return ports
}

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
// MEMPROBE_N; default 2000; MEMPROBE_HEAPPROFILE=FILE writes the heap
// profile while the ports are idle). Without MEMPROBE_REMOTE every port's device
// is unreachable (a distinct 127.x.y.z:1 each, retried after 30 s or
// more), so a port holds its VM connection only. MEMPROBE_REMOTE=tcp (or
// 1) or telnet gives every port a remote of its own, played by a helper
// process, and waits until every device is connected: a device is owned
// by one VM at a time, so ports cannot share one. It asserts that every
// port came up (and every device, with MEMPROBE_REMOTE).
func TestIdlePortMemory(t *testing.T) {
	n := 2000
	if s := os.Getenv("MEMPROBE_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			t.Fatalf("MEMPROBE_N=%q: want a positive count", s)
		}
	}
	scheme := os.Getenv("MEMPROBE_REMOTE")
	switch scheme {
	case "":
	case "1":
		scheme = "tcp"
	case "tcp", "telnet":
	default:
		t.Fatalf("MEMPROBE_REMOTE=%q: want tcp (or 1) or telnet", scheme)
	}
	var ports []int
	if scheme != "" {
		ports = startRemotes(t, n)
	}
	parkAfter := "1s"
	if os.Getenv("MEMPROBE_NOPARK") != "" {
		parkAfter = "0s"
	}
	cfg, err := configs.Parse("x", []byte("[vspc]\nlisten=\"127.0.0.1:0\"\npark_after=\""+parkAfter+"\"\n[policy]\nconnect_allow=[\"127.0.0.0/8\"]\nreconnect_min=\"30s\"\nreconnect_max=\"60s\"\n[log]\nlevel=\"error\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	// As the daemon does: one Parker for VM and device connections.
	pk, err := park.New(park.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer pk.Close()
	br := bridge.New(cfg, nil)
	br.SetParker(pk)
	srv := vspc.NewServer(vspc.Config{Bridger: br, Parker: pk, ParkAfter: cfg.VSPC.ParkAfter.Duration})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(context.Background(), ln) }()
	defer func() { srv.Close(); br.Close(); <-served }()
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	g0 := runtime.NumGoroutine()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		service := fmt.Sprintf("tcp://127.0.%d.%d:1", i/250, i%250+1)
		if scheme != "" {
			service = fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[i])
		}
		if _, err := c.Write(hello(i, service)); err != nil {
			t.Fatal(err)
		}
	}
	testwait.For(t, fmt.Sprintf("%d ports", n), func() bool { return len(srv.Ports()) >= n })
	if scheme != "" {
		testwait.For(t, fmt.Sprintf("%d devices up", n), func() bool {
			up := 0
			for _, d := range br.Devices() {
				if d.State == "up" {
					up++
				}
			}
			return up >= n
		})
	}
	if cfg.VSPC.ParkAfter.Duration > 0 {
		want := n
		if scheme == "tcp" {
			want = 2 * n // and every device connection
		}
		testwait.For(t, fmt.Sprintf("%d connections parked", want), func() bool { return pk.Parked() >= want })
	}
	// Let the ports go idle (handshake garbage, first device attempts,
	// timers) before measuring. This is a settling time, not a wait for
	// a state: what it lets finish has no observable end.
	time.Sleep(500 * time.Millisecond)
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms1)
	if path := os.Getenv("MEMPROBE_HEAPPROFILE"); path != "" {
		// With -test.memprofilerate=1, every live object of the idle
		// ports (go tool pprof -sample_index=inuse_space).
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	per := func(a, b uint64) float64 { return float64(int64(b)-int64(a)) / float64(n) }
	what := "unreachable device"
	if scheme != "" {
		what = scheme + " device connected"
	}
	t.Logf("%d ports (%s, park_after %s, %d connections parked): goroutines/port %.2f, heap in use/port %.0f B, stacks/port %.0f B, heap+stacks %.0f B, other runtime (pollDescs, finalizers)/port %.0f B",
		n, what, parkAfter, pk.Parked(), float64(runtime.NumGoroutine()-g0)/float64(n), per(ms0.HeapInuse, ms1.HeapInuse), per(ms0.StackInuse, ms1.StackInuse),
		per(ms0.HeapInuse+ms0.StackInuse, ms1.HeapInuse+ms1.StackInuse), per(ms0.OtherSys, ms1.OtherSys))
}
