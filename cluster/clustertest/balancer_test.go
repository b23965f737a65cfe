package clustertest

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.Main(m, 5*time.Second) }

// named serves connections by writing its name, then echoing.
func named(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(buf[:n])
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func hello(t *testing.T, addr string) (string, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return "", nil
	}
	c.SetDeadline(time.Time{})
	return line[:len(line)-1], c
}

func TestBalancer(t *testing.T) {
	b := NewBalancer(t, named(t, "a"), named(t, "b"), named(t, "c"))
	var got []string
	var conns []net.Conn
	for range 6 {
		n, c := hello(t, b.Addr())
		got = append(got, n)
		conns = append(conns, c)
	}
	if fmt.Sprint(got) != "[a b c a b c]" {
		t.Errorf("round robin: %v", got)
	}
	b.SetDown(1, true)
	if n1, c1 := hello(t, b.Addr()); n1 != "a" {
		t.Errorf("after b went down: %s", n1)
	} else {
		c1.Close()
	}
	if n2, c2 := hello(t, b.Addr()); n2 != "c" {
		t.Errorf("after b went down: %s", n2)
	} else {
		c2.Close()
	}
	b.Send(2) // a VIP on c
	for range 3 {
		if n, c := hello(t, b.Addr()); n != "c" {
			t.Errorf("VIP on c: %s", n)
		} else {
			c.Close()
		}
	}
	// c's host dies: its connections drop, the others stay.
	b.Cut(2)
	buf := make([]byte, 1)
	conns[2].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conns[2].Read(buf); err == nil {
		t.Error("a connection to the cut backend survived")
	}
	conns[0].Write([]byte("x"))
	conns[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conns[0].Read(buf); err != nil || buf[0] != 'x' {
		t.Errorf("a connection to another backend broke: %v", err)
	}
	for _, c := range conns {
		c.Close()
	}
	if c := b.Counts(); c[0] != 3 || c[1] != 2 || c[2] != 6 {
		t.Errorf("counts %v", c)
	}
}

func TestProxyCut(t *testing.T) {
	p := NewProxy(t, named(t, "a"))
	n, c := hello(t, p.Addr())
	if n != "a" {
		t.Fatalf("through the proxy: %q", n)
	}
	defer c.Close()
	p.Cut()
	c.Write([]byte("y"))
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err == nil {
		t.Fatal("bytes crossed a cut proxy")
	}
	p.Restore()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(buf); err != nil || buf[0] != 'y' {
		t.Fatalf("after restore: %q %v (the held byte should arrive)", buf, err)
	}
}
