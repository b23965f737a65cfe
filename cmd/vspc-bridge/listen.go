package main

import (
	"net"
	"sync/atomic"
	"time"
)

// spreadListener spreads the keepalive idle time of the connections it
// accepts over [k/2, k], a second apart, in turn. Connections that went
// idle at the same moment (a wake storm, a host reconnecting all its VMs,
// a restart) would otherwise send their first probes in one kernel timer
// tick, and the dropped ones would retry together until they ran out of
// probes: on loopback, 9,000 idle connections synchronized this way lost
// 2,994 to ETIMEDOUT 60 s later, their peers alive (the 2,048 ms timer
// wheel slot of a 30 s timer at HZ=250, and a 1,000 packet input backlog);
// spread, none. Probes stay at least every k, which is what a firewall's
// idle timeout needs.
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
		_ = setKeepIdle(tc, spreadIdle(l.k, l.n.Add(1)-1))
	}
	return c, nil
}

// spreadIdle is the keepalive idle time of the n-th accepted connection
// (from 0): k, k-1s, ... down to half of k (rounded up, at least 1s),
// then k again. Linux keeps it in whole seconds.
func spreadIdle(k time.Duration, n uint64) time.Duration {
	hi := int64(max(k/time.Second, 1))
	lo := max((hi+1)/2, 1)
	return time.Duration(hi-int64(n%uint64(hi-lo+1))) * time.Second
}
