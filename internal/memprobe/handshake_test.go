package memprobe

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/configs"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// BenchmarkHandshake: one VM connection from accept to WILL-PROXY (the
// client writes a whole handshake at once and reads until WILL-PROXY).
func BenchmarkHandshake(b *testing.B) {
	cfg, err := configs.Parse("x", []byte("[vspc]\nlisten=\"127.0.0.1:0\"\n[policy]\nconnect_allow=[\"127.0.0.0/8\"]\nreconnect_min=\"30s\"\nreconnect_max=\"60s\"\n[log]\nlevel=\"error\"\n"))
	if err != nil {
		b.Fatal(err)
	}
	br := bridge.New(cfg, nil)
	srv := vspc.NewServer(vspc.Config{Bridger: br})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(context.Background(), ln)
	defer func() { srv.Close(); br.Close() }()
	will := vspc.AppendExt(nil, vspc.WillProxy)
	buf := make([]byte, 4096)
	var conns []net.Conn
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		c.Write(hello(i, fmt.Sprintf("tcp://127.0.%d.%d:1", i/250%250, i%250+1)))
		var got []byte
		for !bytes.Contains(got, will) {
			n, err := c.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			got = append(got, buf[:n]...)
		}
		conns = append(conns, c)
		if len(conns) > 2000 {
			for _, c := range conns {
				c.Close()
			}
			conns = conns[:0]
		}
	}
	for _, c := range conns {
		c.Close()
	}
}
