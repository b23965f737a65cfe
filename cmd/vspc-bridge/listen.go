package main

import (
	"net"
	"time"

	"github.com/vspc-bridge/vspc-bridge/internal/keepalive"
)

// spreadListener spreads the keepalive idle time of the connections it
// accepts over [k/2, k] (package keepalive): on loopback, 9,000 idle
// connections that went idle together lost 2,994 to ETIMEDOUT 60 s later
// with one idle time for all, their peers alive; spread, none
// (TestFaultKeepaliveStorm).
type spreadListener struct {
	net.Listener
	k    time.Duration
	keep keepalive.Spreader
}

// Accept returns the next connection with its keepalive idle time set.
// Should setting it fail, the listener's value (k) stays in force.
func (l *spreadListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = setKeepIdle(tc, l.keep.Next(l.k))
	}
	return c, nil
}
