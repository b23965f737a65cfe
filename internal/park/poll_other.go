//go:build !unix

package park

// noBackend parks nothing: Park returns ErrNotParkable and owners keep a
// goroutine per connection.
type noBackend struct{}

func newPoll(*Parker) (backend, error)            { return noBackend{}, nil }
func (noBackend) start()                          {}
func (noBackend) arm(*Conn, uint32, uint32) error { return ErrNotParkable }
func (noBackend) disarm(*Conn)                    {}
func (noBackend) close()                          {}
