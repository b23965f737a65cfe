package vspc

// Close ends the port for good, logging reason ("route removed from the
// config"): its VM connection is closed, a pending vMotion hand-over is
// abandoned, its backend is closed, and the port is forgotten, so that
// the VM's next DO-PROXY opens a new port through the Bridger with the
// configuration then in force. Data still queued for the VM is dropped
// (and counted in the "port closed" log line). Safe from any goroutine
// that holds no lock; idempotent.
func (p *Port) Close(reason string) {
	p.srv.mu.Lock()
	if p.srv.ports[p.key] == p {
		delete(p.srv.ports, p.key)
	}
	p.srv.mu.Unlock()
	p.close(reason)
}
