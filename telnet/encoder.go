package telnet

import "bytes"

// AppendData appends p to dst with every 255 doubled (IAC IAC), as data is
// sent when BINARY is on.
func AppendData(dst, p []byte) []byte {
	for {
		i := bytes.IndexByte(p, byte(IAC))
		if i < 0 {
			return append(dst, p...)
		}
		dst = append(dst, p[:i+1]...)
		dst = append(dst, byte(IAC))
		p = p[i+1:]
	}
}

// AppendText appends p to dst as NVT text (BINARY off): 255 is doubled and
// a CR not followed by LF in p is sent as CR NUL (RFC 854).
func AppendText(dst, p []byte) []byte {
	for i, b := range p {
		switch b {
		case byte(IAC):
			dst = append(dst, b, b)
		case '\r':
			dst = append(dst, b)
			if i+1 >= len(p) || p[i+1] != '\n' {
				dst = append(dst, 0)
			}
		default:
			dst = append(dst, b)
		}
	}
	return dst
}

// EscapedLen is the length of AppendData(nil, p).
func EscapedLen(p []byte) int { return len(p) + bytes.Count(p, []byte{byte(IAC)}) }

// AppendCommand appends IAC c.
func AppendCommand(dst []byte, c Command) []byte { return append(dst, byte(IAC), byte(c)) }

// AppendNegotiation appends IAC verb opt; verb is WILL, WONT, DO or DONT.
func AppendNegotiation(dst []byte, verb Command, opt Option) []byte {
	return append(dst, byte(IAC), byte(verb), byte(opt))
}

// AppendSubnegotiation appends IAC SB opt, the parts concatenated with
// every 255 doubled, and IAC SE.
func AppendSubnegotiation(dst []byte, opt Option, parts ...[]byte) []byte {
	dst = append(dst, byte(IAC), byte(SB), byte(opt))
	for _, p := range parts {
		dst = AppendData(dst, p)
	}
	return append(dst, byte(IAC), byte(SE))
}
