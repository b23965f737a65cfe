package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
)

// runRelay is the plain Go TCP relay the bridge is compared with: for each
// connection accepted on 127.0.0.1 it dials target and copies both ways
// with io.Copy. By default the connections are hidden behind plain
// io.Reader/io.Writer values, so io.Copy copies through a 32 KiB buffer
// per direction; with -splice it gets the *net.TCPConn values and splices
// (zero copy, but each waiting direction holds a pipe: 6 descriptors per
// relayed connection). It runs until killed.
func runRelay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	target := fs.String("target", "", "host:port every accepted connection is relayed to (loopback)")
	splice := fs.Bool("splice", false, "let io.Copy see the TCP connections (splice(2) on Linux)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !isLoopback(*target) {
		return fmt.Errorf("vspc-load relay: target %q is not a 127.0.0.0/8 address", *target)
	}
	raiseOwnLimit()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "relay listening on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			d, err := net.Dial("tcp", *target)
			if err != nil {
				return
			}
			defer d.Close()
			var wg sync.WaitGroup
			cp := func(dst, src net.Conn) {
				if *splice {
					io.Copy(dst, src)
				} else {
					io.Copy(struct{ io.Writer }{dst}, struct{ io.Reader }{src})
				}
			}
			wg.Go(func() { cp(d, c); d.(*net.TCPConn).CloseWrite() })
			cp(c, d)
			c.(*net.TCPConn).CloseWrite()
			wg.Wait()
		}()
	}
}

// isLoopback reports whether host:port names an address in 127.0.0.0/8.
func isLoopback(hostport string) bool {
	h, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.To4() != nil && ip.To4()[0] == 127
}
