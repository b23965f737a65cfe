// Package keepalive spreads TCP keepalive idle times over connections.
//
// Connections that went idle at the same moment (a wake storm, a host
// reconnecting all its VMs, a restart) send their first keepalive probes
// in one kernel timer slot, and a burst of thousands of probes overflows
// a queue on the way (on loopback the input backlog,
// net.core.netdev_max_backlog). The dropped probes retry together and
// can run out of retries while the peers are alive: 2,994 of 9,000 idle
// connections did in cmd/vspc-bridge's TestFaultKeepaliveStorm. Giving
// each connection its own idle time, in turn, spreads the probes.
package keepalive

import (
	"net"
	"sync/atomic"
	"time"
)

// Spread is the keepalive idle time of the n-th connection (from 0) of a
// group whose idle time is k: k, k-1s, ... down to half of k (rounded up,
// at least 1 s), then k again. Whole seconds, as Linux keeps them, so a
// burst of connections lands in distinct timer slots; a probe still
// leaves at least every k, which a firewall's idle timeout needs.
func Spread(k time.Duration, n uint64) time.Duration {
	hi := int64(max(k/time.Second, 1))
	lo := max((hi+1)/2, 1)
	return time.Duration(hi-int64(n%uint64(hi-lo+1))) * time.Second
}

// GoDefault is Go's keepalive for connections it dials and accepts:
// probes every 15 s, 9 of them, the first after GoDefault of idle.
const GoDefault = 15 * time.Second

// Spreader gives a group of connections their idle times in turn
// (Spread): one per listener or dialer, whose connections go idle
// together in a storm.
type Spreader struct{ n atomic.Uint64 }

// Next is the idle time of the group's next connection, for a group
// whose idle time is k.
func (s *Spreader) Next(k time.Duration) time.Duration { return Spread(k, s.n.Add(1)-1) }

// Default is Go's keepalive (GoDefault) with the idle time of the group's
// next connection, for a dialer or net.TCPConn.SetKeepAliveConfig.
func (s *Spreader) Default() net.KeepAliveConfig {
	return net.KeepAliveConfig{Enable: true, Idle: s.Next(GoDefault), Interval: GoDefault, Count: 9}
}
