//go:build !linux

package main

import (
	"net"
	"time"
)

// keepaliveListenConfig applies TCP keepalive to each accepted connection
// (Linux sets it once on the listener instead; see listen_linux.go).
// k <= 0 turns keepalive off.
func keepaliveListenConfig(k time.Duration) net.ListenConfig {
	if k <= 0 {
		return net.ListenConfig{KeepAlive: -1}
	}
	return net.ListenConfig{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: k, Interval: max(k/5, time.Second), Count: 5}}
}

// setKeepIdle sets the keepalive idle time of an accepted connection.
func setKeepIdle(tc *net.TCPConn, d time.Duration) error {
	return tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: d, Interval: -1, Count: -1})
}
