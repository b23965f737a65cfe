package remote

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// logWriter appends a console's output to a file with size-based
// rotation (NAME.log, NAME.log.1 … NAME.log.N, oldest highest). Writes
// never block: output waits in a bounded buffer for the writer goroutine
// (run), and what does not fit is lost from the log, counted, and marked
// in the file where it went missing. Files split exactly at maxSize, so
// the concatenation of the files, oldest first, is the console output.
type logWriter struct {
	path     string
	maxSize  int64
	maxFiles int
	limit    int

	lostTotal atomic.Int64 // bytes lost since start, for status

	mu      sync.Mutex // guards the fields below
	cond    sync.Cond
	q       []byte
	lost    int64 // lost bytes not yet marked in the file
	closing bool

	f    *os.File // owned by run
	size int64    // owned by run
	err  error    // last file error, owned by run
}

// logFileName names a console's log after its VM name, VC UUID and
// service URI, with anything but [A-Za-z0-9._-] replaced by '_'.
func logFileName(vmName, vcUUID, service string) string {
	if vmName == "" {
		vmName = "unnamed"
	}
	if vcUUID == "" {
		vcUUID = "no-uuid"
	}
	return sanitize(vmName) + "_" + sanitize(vcUUID) + "_" + sanitize(service) + ".log"
}

func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
	s = strings.TrimLeft(s, ".")
	if len(s) > 80 {
		s = s[:80]
	}
	if s == "" {
		s = "_"
	}
	return s
}

func newLogWriter(path string, maxSize int64, maxFiles, limit int) (*logWriter, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("remote: console log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("remote: console log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("remote: console log: %w", err)
	}
	l := &logWriter{path: path, maxSize: maxSize, maxFiles: maxFiles, limit: limit, f: f, size: st.Size()}
	l.cond.L = &l.mu
	return l, nil
}

// write queues p for the file without blocking; over the limit it is
// lost (and counted).
func (l *logWriter) write(p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return
	}
	// Once output is lost, everything is lost until the writer has taken
	// the queue, so the loss is one run that the marker after it covers.
	if l.lost > 0 || len(l.q)+len(p) > l.limit {
		l.lost += int64(len(p))
		l.lostTotal.Add(int64(len(p)))
		return
	}
	if len(l.q) == 0 {
		l.cond.Broadcast()
	}
	l.q = append(l.q, p...)
}

// close makes run write what is queued, close the file and return.
func (l *logWriter) close() {
	l.mu.Lock()
	l.closing = true
	l.cond.Broadcast()
	l.mu.Unlock()
}

// run writes queued output to the files until close. It returns the
// first file error (after which output is counted as lost).
func (l *logWriter) run() error {
	defer func() { l.f.Close() }()
	var spare []byte
	for {
		l.mu.Lock()
		for len(l.q) == 0 && l.lost == 0 && !l.closing {
			l.cond.Wait()
		}
		cur, lost, closing := l.q, l.lost, l.closing
		l.q, l.lost = spare[:0], 0
		l.mu.Unlock()
		l.put(cur)
		if lost > 0 {
			l.put(fmt.Appendf(nil, "\r\n[vspc-bridge: %d bytes of console output lost from this log: disk too slow]\r\n", lost))
		}
		spare = cur
		if len(cur) == 0 && lost == 0 && closing {
			return l.err
		}
	}
}

// put writes p, rotating whenever the current file reaches maxSize.
func (l *logWriter) put(p []byte) {
	for len(p) > 0 {
		if l.err != nil {
			l.lostTotal.Add(int64(len(p)))
			return
		}
		if l.size >= l.maxSize {
			l.err = l.rotate()
			continue
		}
		n := min(int64(len(p)), l.maxSize-l.size)
		w, err := l.f.Write(p[:n])
		l.size += int64(w)
		p = p[w:]
		if err != nil {
			l.err = fmt.Errorf("remote: console log %s: %w", l.path, err)
		}
	}
}

// rotate shifts NAME.log.i to NAME.log.i+1 (dropping the oldest) and
// starts a new NAME.log.
func (l *logWriter) rotate() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("remote: console log %s: %w", l.path, err)
	}
	if l.maxFiles == 0 {
		if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remote: console log: %w", err)
		}
	} else {
		os.Remove(fmt.Sprintf("%s.%d", l.path, l.maxFiles))
		for i := l.maxFiles - 1; i >= 1; i-- {
			from := fmt.Sprintf("%s.%d", l.path, i)
			if err := os.Rename(from, fmt.Sprintf("%s.%d", l.path, i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remote: console log: %w", err)
			}
		}
		if err := os.Rename(l.path, l.path+".1"); err != nil {
			return fmt.Errorf("remote: console log: %w", err)
		}
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("remote: console log: %w", err)
	}
	l.f, l.size = f, 0
	return nil
}
