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

import "time"

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
