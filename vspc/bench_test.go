package vspc_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
	"github.com/vspc-bridge/vspc-bridge/vspc/vspctest"
)

// These benchmarks run the real server and bridge in-process on loopback
// (so `go test -bench -cpuprofile/-memprofile` shows where the bridge
// spends). cmd/vspc-load measures the same things on a separate bridge
// process at scale; `make bench` runs both.

// benchEnv is a server with the real bridge on 127.0.0.1.
type benchEnv struct {
	srv  *vspc.Server
	br   *bridge.Bridge
	addr string
}

func newBenchEnv(tb testing.TB, reconnect string, mod func(*vspc.Config)) *benchEnv {
	tb.Helper()
	cfg, err := configs.Parse("bench.toml", fmt.Appendf(nil, `
[vspc]
listen = "127.0.0.1:0"
[policy]
connect_allow = ["127.0.0.0/8"]
reconnect_min = %q
reconnect_max = %q
`, reconnect, reconnect))
	if err != nil {
		tb.Fatal(err)
	}
	br := bridge.New(cfg, nil)
	vc := vspc.Config{Bridger: br, Logger: quietLogger(), MaxSessions: 1 << 20}
	if mod != nil {
		mod(&vc)
	}
	srv := vspc.NewServer(vc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
		br.Close()
	})
	return &benchEnv{srv: srv, br: br, addr: ln.Addr().String()}
}

// idleTarget is a distinct loopback target nobody listens on.
func idleTarget(i int) string {
	return fmt.Sprintf("tcp://127.%d.%d.%d:1", 200+i/62500, i/250%250, i%250+1)
}

// dialRaw connects a simulated ESXi host, completes the handshake and
// then takes the connection over from vspctest (its reader is stopped
// with a past read deadline), so that the client side holds nothing but
// the socket: the VM side as a telnet codec with no extra goroutine.
func dialRaw(tb testing.TB, addr string, vm vspctest.VM) *vspctest.Raw {
	tb.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := vspctest.Handshake(context.Background(), nc, vm)
	if err != nil {
		nc.Close()
		tb.Fatal(err)
	}
	r, err := c.Detach()
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// BenchmarkIdlePorts opens b.N idle VM ports (remote unreachable, retry
// backoff 1h) and reports what each costs the server and bridge: heap
// and stack bytes and goroutines (the client side holds only its socket).
// Run with -benchtime=2000x; VSPC_BENCH_HEAP=file writes a heap profile
// while the ports are open (use -memprofilerate=512 for detail).
func BenchmarkIdlePorts(b *testing.B) {
	e := newBenchEnv(b, "1h", nil)
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	g0 := runtime.NumGoroutine()
	conns := make([]*vspctest.Raw, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		conns = append(conns, dialRaw(b, e.addr, vmNamed(i, vspc.DirClient, idleTarget(i))))
	}
	b.StopTimer()
	// Measure once every port's first (failed) dial is done: a link
	// waiting for its retry holds a timer, not a goroutine.
	testwait.For(b, "every idle port's first connect to fail", func() bool {
		devs := e.br.Devices()
		for _, d := range devs {
			if d.State != "down" {
				return false
			}
		}
		return len(devs) == b.N
	})
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	g1 := runtime.NumGoroutine()
	n := float64(b.N)
	b.ReportMetric(float64(int64(ms1.HeapInuse)-int64(ms0.HeapInuse))/n, "heap-B/port")
	b.ReportMetric(float64(int64(ms1.StackInuse)-int64(ms0.StackInuse))/n, "stack-B/port")
	b.ReportMetric(float64(g1-g0)/n, "goroutines/port")
	if path := os.Getenv("VSPC_BENCH_HEAP"); path != "" {
		// A heap profile while the ports are open (-memprofile is written
		// after they are closed).
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	for _, c := range conns {
		c.Close()
	}
}

// benchPair is a VM joined to a raw TCP remote through the bridge.
func benchPair(b *testing.B, e *benchEnv, i int) (*vspctest.Raw, net.Conn) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	vm := dialRaw(b, e.addr, vmNamed(i, vspc.DirClient, "tcp://"+ln.Addr().String()))
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	r, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { vm.Close(); r.Close() })
	return vm, r
}

// relayPair is the same through a plain io.Copy relay in this process.
func relayPair(b *testing.B) (net.Conn, net.Conn) {
	b.Helper()
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := rl.Accept()
		if err != nil {
			return
		}
		d, err := net.Dial("tcp", tl.Addr().String())
		if err != nil {
			c.Close()
			return
		}
		var cw sync.WaitGroup
		cw.Go(func() { io.Copy(struct{ io.Writer }{d}, struct{ io.Reader }{c}); d.Close() })
		io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{d})
		c.Close()
		cw.Wait()
	})
	vm, err := net.Dial("tcp", rl.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	r, err := tl.Accept()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		vm.Close()
		r.Close()
		rl.Close()
		tl.Close()
		wg.Wait()
	})
	return vm, r
}

// stream writes b.N chunks of 32 KiB (counter words) to w while a reader
// checks them on r; it returns when every byte arrived.
func stream(b *testing.B, w io.Writer, r io.Reader) {
	const chunk = 32 << 10
	b.SetBytes(chunk)
	total := int64(b.N) * chunk
	errc := make(chan error, 1)
	go func() {
		var cr counterReader
		buf := make([]byte, 64<<10)
		var got int64
		for got < total {
			n, err := r.Read(buf)
			if n > 0 {
				if cerr := cr.check(buf[:n]); cerr != nil {
					errc <- cerr
					return
				}
				got += int64(n)
			}
			if err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	buf := make([]byte, chunk)
	var next uint32
	b.ResetTimer()
	for range b.N {
		for i := 0; i < chunk; i += 4 {
			binary.BigEndian.PutUint32(buf[i:], word(next))
			next++
		}
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkThroughputOneSession moves counter data (half of it 0xFF
// bytes, which the telnet side escapes) through one session of the real
// server and bridge, and through a plain io.Copy relay for comparison.
func BenchmarkThroughputOneSession(b *testing.B) {
	b.Run("bridge/remote-to-VM", func(b *testing.B) {
		vm, r := benchPair(b, newBenchEnv(b, "200ms", nil), 1)
		stream(b, r, vm)
	})
	b.Run("bridge/VM-to-remote", func(b *testing.B) {
		vm, r := benchPair(b, newBenchEnv(b, "200ms", nil), 1)
		stream(b, vm, r)
	})
	b.Run("relay/one-way", func(b *testing.B) {
		vm, r := relayPair(b)
		stream(b, r, vm)
	})
}

// BenchmarkHandshakeBurst connects 1,000 VMs at once per op and reports
// the time until the last one is past WILL-PROXY.
func BenchmarkHandshakeBurst(b *testing.B) {
	const n = 1000
	e := newBenchEnv(b, "1h", func(c *vspc.Config) { c.GracePeriod = -1 })
	var walls []time.Duration
	for k := range b.N {
		conns := make([]*vspctest.Conn, n)
		var wg sync.WaitGroup
		var fail atomic.Value
		start := time.Now()
		for i := range n {
			wg.Go(func() {
				c, err := vspctest.Dial(context.Background(), e.addr, vmNamed(k*n+i, vspc.DirClient, idleTarget(k*n+i)))
				if err != nil {
					fail.Store(err)
					return
				}
				conns[i] = c
			})
		}
		wg.Wait()
		walls = append(walls, time.Since(start))
		if err := fail.Load(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for _, c := range conns {
			c.Close()
		}
		b.StartTimer()
	}
	slices.Sort(walls)
	b.ReportMetric(float64(walls[len(walls)/2])/float64(time.Millisecond), "ms/1000-VMs-p50")
	b.ReportMetric(float64(walls[len(walls)-1])/float64(time.Millisecond), "ms/1000-VMs-max")
}

// BenchmarkVMotionSwitchover migrates one VM b.N times. During each
// hand-over the remote sends 256 bytes (held by the bridge); the figure
// is the time from COMPLETE sent until they are all read on the new
// connection. It reports p50 and p99 and hand-overs per second.
func BenchmarkVMotionSwitchover(b *testing.B) {
	e := newBenchEnv(b, "200ms", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	vm := vmNamed(1, vspc.DirClient, "tcp://"+ln.Addr().String())
	ctx := context.Background()
	cur, err := vspctest.Dial(ctx, e.addr, vm)
	if err != nil {
		b.Fatal(err)
	}
	remote, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer remote.Close()
	var next uint32
	var cr counterReader
	buf := make([]byte, 4096)
	sw := make([]time.Duration, 0, b.N)
	start := time.Now()
	b.ResetTimer()
	for k := range b.N {
		seq := binary.BigEndian.AppendUint32(nil, uint32(k)|0xff00)
		secret, err := cur.Begin(ctx, seq)
		if err != nil {
			b.Fatal(err)
		}
		held := counterChunk(next, 64)
		next += 64
		if _, err := remote.Write(held); err != nil {
			b.Fatal(err)
		}
		dst, err := vspctest.DialPeer(ctx, e.addr, vm, seq, secret)
		if err != nil {
			b.Fatal(err)
		}
		go cur.Close()
		t0 := time.Now()
		if err := dst.Complete(seq); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < len(held); {
			n, err := dst.Read(buf[:len(held)-got])
			if err != nil {
				b.Fatal(err)
			}
			if cerr := cr.check(buf[:n]); cerr != nil {
				b.Fatal(cerr)
			}
			got += n
		}
		sw = append(sw, time.Since(t0))
		cur = dst
	}
	b.StopTimer()
	elapsed := time.Since(start)
	cur.Close()
	slices.Sort(sw)
	b.ReportMetric(float64(sw[len(sw)/2])/float64(time.Millisecond), "switch-ms-p50")
	b.ReportMetric(float64(sw[len(sw)*99/100])/float64(time.Millisecond), "switch-ms-p99")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "vmotions/s")
}

// pingPong: the VM writes 16 bytes, the remote echoes them, the VM reads
// them back; b.N round trips.
func pingPong(b *testing.B, vm io.ReadWriter, remote net.Conn) {
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := remote.Read(buf)
			if n > 0 {
				if _, err := remote.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	out := counterChunk(0, 4)
	in := make([]byte, len(out))
	b.ResetTimer()
	for range b.N {
		if _, err := vm.Write(out); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(vm, in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTrip is one small write echoed by the remote, through the
// bridge and through a plain relay; the difference is the bridge's added
// latency on an idle machine (cmd/vspc-load measures it at 1,000 sessions).
func BenchmarkRoundTrip(b *testing.B) {
	b.Run("bridge", func(b *testing.B) {
		vm, r := benchPair(b, newBenchEnv(b, "200ms", nil), 1)
		pingPong(b, vm, r)
	})
	b.Run("relay", func(b *testing.B) {
		vm, r := relayPair(b)
		pingPong(b, vm, r)
	})
}
