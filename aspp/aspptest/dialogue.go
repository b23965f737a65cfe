// Package aspptest reads the recorded or hand-written command-port
// dialogues in aspp/testdata, for the codec's tests and the simulated
// NPort's.
//
// A dialogue file has one step per line: "> hex bytes" for host → NPort,
// "< hex bytes" for NPort → host, each optionally followed by "# comment".
// Lines starting with "#" and blank lines are comments. The file's name
// says where it came from (sheet-… = written by hand from the fact sheet).
package aspptest

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// Step is one line of a dialogue.
type Step struct {
	FromHost bool   // ">" line: host → NPort
	Bytes    []byte // the line's bytes
	Comment  string // text after "#", trimmed
	Line     int    // line number in the file
}

// Load reads a dialogue file.
func Load(path string) ([]Step, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("aspptest: %w", err)
	}
	defer f.Close()
	var steps []Step
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		st := Step{Line: n}
		switch line[0] {
		case '>':
			st.FromHost = true
		case '<':
		default:
			return nil, fmt.Errorf("aspptest: %s:%d: a step starts with > or <", path, n)
		}
		body := line[1:]
		if i := strings.IndexByte(body, '#'); i >= 0 {
			st.Comment = strings.TrimSpace(body[i+1:])
			body = body[:i]
		}
		b, err := hex.DecodeString(strings.Join(strings.Fields(body), ""))
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("aspptest: %s:%d: bad hex bytes %q", path, n, strings.TrimSpace(body))
		}
		st.Bytes = b
		steps = append(steps, st)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("aspptest: %s: %w", path, err)
	}
	return steps, nil
}

// Join returns the bytes of every step in one direction, concatenated.
func Join(steps []Step, fromHost bool) []byte {
	var b []byte
	for _, st := range steps {
		if st.FromHost == fromHost {
			b = append(b, st.Bytes...)
		}
	}
	return b
}
