package remote

// escaper splits the input of an interactive session into data for the
// VM and escape commands. The escape sequence (configurable, default
// Ctrl-E c) is followed by one command byte; the sequence's last byte as
// the command sends the sequence itself. A partial sequence is held back
// until the next byte decides. It is a pure state machine: no I/O.
type escaper struct {
	seq []byte // nil: no escapes, everything is data
	n   int    // bytes of seq matched so far
	cmd bool   // seq matched: the next byte is a command
}

// Escape commands (the byte after the escape sequence).
const (
	cmdDetach = '.'
	cmdBreak  = 'b'
	cmdWho    = 'w'
	cmdHelp   = '?'
	cmdSpy    = 's' // switch to read-only (conserver's "spy")
	cmdAttach = 'a' // switch to read-write (if the user may write)
)

// feed processes p in order: data runs go to emit (aliasing p or the
// sequence: copy to keep), commands to cmd. feed returns early, dropping
// the rest of p, when cmd returns false.
func (e *escaper) feed(p []byte, emit func([]byte), cmd func(byte) bool) {
	if len(e.seq) == 0 {
		if len(p) > 0 {
			emit(p)
		}
		return
	}
	start := 0 // first byte of p not yet emitted or consumed
	for i := 0; i < len(p); i++ {
		b := p[i]
		if e.cmd {
			e.cmd = false
			start = i + 1
			if b == e.seq[len(e.seq)-1] {
				emit(e.seq)
				continue
			}
			if !cmd(b) {
				return
			}
			continue
		}
		if b != e.seq[e.n] && e.n > 0 {
			emit(e.seq[:e.n]) // the held prefix was data after all
			e.n = 0
			start = i
		}
		if b == e.seq[e.n] {
			if e.n == 0 && i > start {
				emit(p[start:i])
			}
			e.n++
			start = i + 1
			if e.n == len(e.seq) {
				e.n = 0
				e.cmd = true
			}
		}
	}
	if start < len(p) {
		emit(p[start:])
	}
}

// escapeName renders an escape sequence in caret notation ("^Ec").
func escapeName(seq []byte) string {
	var b []byte
	for _, c := range seq {
		switch {
		case c == 0x7f:
			b = append(b, '^', '?')
		case c < 0x20:
			b = append(b, '^', c+'@')
		default:
			b = append(b, c)
		}
	}
	return string(b)
}
