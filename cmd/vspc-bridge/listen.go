package main

import (
	"net"
	"sync/atomic"
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
	k time.Duration
	n atomic.Uint64
}

// Accept returns the next connection with its keepalive idle time set.
// Should setting it fail, the listener's value (k) stays in force.
func (l *spreadListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = setKeepIdle(tc, keepalive.Spread(l.k, l.n.Add(1)-1))
	}
	return c, nil
}
