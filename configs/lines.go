package configs

import (
	"strconv"
	"strings"
)

// This file finds the line of each key in a TOML document, so that
// validation errors can say where the offending key is. BurntSushi/toml's
// MetaData knows key positions but does not export them, and it folds all
// elements of an array of tables ([[route]]) into one key, so we scan the
// text ourselves. The scanner only runs on documents toml.Decode accepted;
// on anything else it still terminates and never panics, but its answers
// are best effort.

// keyLines maps a key path to the 1-based line where it is defined. Paths
// are keys joined with dots (quoted where TOML would quote them), with the
// element index of arrays and arrays of tables in brackets:
// "vspc.listen", "route[1].device", "policy.connect_allow[2]".
type keyLines map[string]int

// find returns the line of key, or of its nearest ancestor that has one
// (a key set in an inline table resolves to the table's line), or 0.
func (kl keyLines) find(key string) int {
	for k := key; k != ""; k = parentKey(k) {
		if l, ok := kl[k]; ok {
			return l
		}
	}
	return 0
}

// isBareKey reports whether k can be written without quotes.
func isBareKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// joinKey appends one key to a path.
func joinKey(path, key string) string {
	if !isBareKey(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// indexKey appends an element index to a path.
func indexKey(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// parentKey strips the last key or index from a path built by joinKey and
// indexKey.
func parentKey(k string) string {
	switch {
	case strings.HasSuffix(k, "]"):
		if i := strings.LastIndexByte(k, '['); i >= 0 {
			return k[:i]
		}
		return ""
	case strings.HasSuffix(k, `"`) && len(k) >= 2:
		// find the opening quote of the last quoted key
		for i := len(k) - 2; i >= 0; i-- {
			if k[i] == '"' && (i == 0 || k[i-1] != '\\') {
				return strings.TrimSuffix(k[:i], ".")
			}
		}
		return ""
	}
	if i := strings.LastIndexByte(k, '.'); i >= 0 {
		return k[:i]
	}
	return ""
}

type lineScanner struct {
	s      string
	i      int // offset of the next byte
	line   int // line of s[i]
	lines  keyLines
	arrays map[string]int // array-of-tables path -> elements seen so far
}

func scanKeyLines(src string) keyLines {
	sc := &lineScanner{s: src, line: 1, lines: keyLines{}, arrays: map[string]int{}}
	if strings.HasPrefix(src, "\uFEFF") {
		sc.i = len("\uFEFF") // byte order mark
	}
	table := ""
	for sc.i < len(sc.s) {
		sc.skipSpace()
		if sc.i >= len(sc.s) {
			break
		}
		switch c := sc.s[sc.i]; c {
		case '\n', '\r':
			sc.advance()
		case '#':
			sc.skipLine()
		case '[':
			line := sc.line
			double := strings.HasPrefix(sc.s[sc.i:], "[[")
			sc.advance()
			if double {
				sc.advance()
			}
			segs, ok := sc.keySegs()
			if ok && sc.peek() == ']' {
				table = sc.resolveHeader(segs, double)
				sc.record(table, line)
			}
			sc.skipLine()
		default:
			line := sc.line
			segs, ok := sc.keySegs()
			if !ok || sc.peek() != '=' {
				sc.skipLine()
				continue
			}
			sc.advance() // '='
			p := table
			for _, seg := range segs {
				p = joinKey(p, seg)
				sc.record(p, line)
			}
			sc.value(p)
		}
	}
	return sc.lines
}

func (sc *lineScanner) peek() byte {
	if sc.i < len(sc.s) {
		return sc.s[sc.i]
	}
	return 0
}

func (sc *lineScanner) advance() {
	if sc.i < len(sc.s) {
		if sc.s[sc.i] == '\n' {
			sc.line++
		}
		sc.i++
	}
}

func (sc *lineScanner) record(path string, line int) {
	if _, ok := sc.lines[path]; !ok {
		sc.lines[path] = line
	}
}

func (sc *lineScanner) skipSpace() {
	for sc.i < len(sc.s) && (sc.s[sc.i] == ' ' || sc.s[sc.i] == '\t') {
		sc.i++
	}
}

// skipLine skips to the next newline, leaving it unread.
func (sc *lineScanner) skipLine() {
	for sc.i < len(sc.s) && sc.s[sc.i] != '\n' {
		sc.i++
	}
}

// skipBlank skips spaces, newlines and comments.
func (sc *lineScanner) skipBlank() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\r', '\n':
			sc.advance()
		case '#':
			sc.skipLine()
		default:
			return
		}
	}
}

// resolveHeader turns the keys of a [table] or [[array]] header into a path,
// adding the current element index after every array-of-tables prefix.
func (sc *lineScanner) resolveHeader(segs []string, double bool) string {
	cur := ""
	for j, seg := range segs {
		cur = joinKey(cur, seg)
		if double && j == len(segs)-1 {
			n := sc.arrays[cur]
			sc.arrays[cur] = n + 1
			return indexKey(cur, n)
		}
		if n, ok := sc.arrays[cur]; ok && n > 0 {
			cur = indexKey(cur, n-1)
		}
	}
	return cur
}

// keySegs reads a dotted key (bare, "basic" or 'literal' parts) and the
// spaces after it.
func (sc *lineScanner) keySegs() ([]string, bool) {
	var segs []string
	for {
		sc.skipSpace()
		start := sc.i
		switch sc.peek() {
		case '"':
			sc.advance()
			for sc.i < len(sc.s) && sc.s[sc.i] != '"' && sc.s[sc.i] != '\n' {
				if sc.s[sc.i] == '\\' {
					sc.i++
				}
				if sc.i < len(sc.s) && sc.s[sc.i] != '\n' {
					sc.i++
				}
			}
			if sc.peek() != '"' {
				return nil, false
			}
			sc.advance()
			k, err := strconv.Unquote(sc.s[start:sc.i])
			if err != nil {
				k = sc.s[start+1 : sc.i-1]
			}
			segs = append(segs, k)
		case '\'':
			sc.advance()
			for sc.i < len(sc.s) && sc.s[sc.i] != '\'' && sc.s[sc.i] != '\n' {
				sc.i++
			}
			if sc.peek() != '\'' {
				return nil, false
			}
			sc.advance()
			segs = append(segs, sc.s[start+1:sc.i-1])
		default:
			for sc.i < len(sc.s) && isBareKey(sc.s[sc.i:sc.i+1]) {
				sc.i++
			}
			if sc.i == start {
				return nil, false
			}
			segs = append(segs, sc.s[start:sc.i])
		}
		sc.skipSpace()
		if sc.peek() != '.' {
			return segs, true
		}
		sc.advance()
	}
}

// value skips one value, recording the elements of arrays and the keys of
// inline tables under path p.
func (sc *lineScanner) value(p string) {
	sc.skipSpace()
	switch sc.peek() {
	case '"':
		if strings.HasPrefix(sc.s[sc.i:], `"""`) {
			sc.multiline(`"""`, true)
			return
		}
		sc.advance()
		for sc.i < len(sc.s) && sc.s[sc.i] != '"' && sc.s[sc.i] != '\n' {
			if sc.s[sc.i] == '\\' {
				sc.i++
			}
			if sc.i < len(sc.s) && sc.s[sc.i] != '\n' {
				sc.i++
			}
		}
		if sc.peek() == '"' {
			sc.advance()
		}
	case '\'':
		if strings.HasPrefix(sc.s[sc.i:], `'''`) {
			sc.multiline(`'''`, false)
			return
		}
		sc.advance()
		for sc.i < len(sc.s) && sc.s[sc.i] != '\'' && sc.s[sc.i] != '\n' {
			sc.i++
		}
		if sc.peek() == '\'' {
			sc.advance()
		}
	case '[':
		sc.advance()
		for idx := 0; ; {
			sc.skipBlank()
			switch sc.peek() {
			case 0:
				return
			case ']':
				sc.advance()
				return
			case ',':
				sc.advance()
				idx++
			default:
				start := sc.i
				ep := indexKey(p, idx)
				sc.record(ep, sc.line)
				sc.value(ep)
				if sc.i == start {
					sc.advance() // not a value; make progress
				}
			}
		}
	case '{':
		sc.advance()
		for {
			sc.skipBlank()
			switch sc.peek() {
			case 0:
				return
			case '}':
				sc.advance()
				return
			case ',':
				sc.advance()
			default:
				start, line := sc.i, sc.line
				segs, ok := sc.keySegs()
				if !ok || sc.peek() != '=' {
					if sc.i == start {
						sc.advance()
					}
					continue
				}
				sc.advance() // '='
				kp := p
				for _, seg := range segs {
					kp = joinKey(kp, seg)
					sc.record(kp, line)
				}
				sc.value(kp)
			}
		}
	default:
		for sc.i < len(sc.s) && strings.IndexByte(",]}#\r\n", sc.s[sc.i]) < 0 {
			sc.i++
		}
	}
}

// multiline skips a multi-line string starting at sc.i with the delimiter
// delim (""" or ”'); escapes count only in basic strings.
func (sc *lineScanner) multiline(delim string, escapes bool) {
	for range 3 {
		sc.advance()
	}
	for sc.i < len(sc.s) {
		if escapes && sc.s[sc.i] == '\\' {
			sc.advance()
			sc.advance()
			continue
		}
		if strings.HasPrefix(sc.s[sc.i:], delim) {
			for range 3 {
				sc.advance()
			}
			// up to two more quotes may end the string's content
			for n := 0; n < 2 && sc.peek() == delim[0]; n++ {
				sc.advance()
			}
			return
		}
		sc.advance()
	}
}
