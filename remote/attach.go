package remote

import "github.com/vspc-bridge/vspc-bridge/configs"

// This file adds what a door outside this package (the web console,
// package web) needs beside Hub.Attach: the same password logins as the
// telnet and SSH doors, the users as a reload leaves them, and where a
// client's scrollback ends.

// Login checks a password login made at another door: the same bcrypt
// check, per-address and per-name rate limits, failure log and counters
// as telnet and SSH logins. ip is the client's address; via names the
// door ("web"). It returns ErrLoginBlocked while the address or name is
// rate-limited, ErrLoginFailed for any other failure, and ErrDisabled
// with remote access off. The caller pauses [remote] login_delay after a
// failure.
func (h *Hub) Login(ip, name, via string, password []byte) (*configs.User, error) {
	if h.auth == nil {
		return nil, ErrDisabled
	}
	u, err := h.auth.password(ip, name, via, password)
	if err != nil {
		return nil, err
	}
	h.logins.Add(1)
	h.log.Info("remote login", "user", name, "peer_ip", ip, "via", via)
	return u, nil
}

// User returns the [[user]] named name as the hub knows it now (SetUsers
// replaces the tables on reload), or nil.
func (h *Hub) User(name string) *configs.User {
	if h.auth == nil {
		return nil
	}
	return h.auth.user(name)
}

// Replay is how many bytes at the start of the client's output are
// scrollback (output from before it attached), counted before
// AttachOptions.Encode. A client that renders a terminal uses it to tell
// the replay from live output: a terminal answers queries it finds in old
// output too, and those answers must not reach the VM.
func (cl *Client) Replay() int { return cl.a.replayed }
