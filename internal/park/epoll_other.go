//go:build !linux

package park

func newEpoll(p *Parker) (backend, error) { return newPoll(p) }
