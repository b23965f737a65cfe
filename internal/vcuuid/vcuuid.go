// Package vcuuid reads the UUIDs a VMware ESXi host and vCenter write: the
// VM-VC-UUID of the VMware telnet extension (option 232), which a host
// sends as 16 spaced hex pairs, and the forms operators copy into a config
// from vCenter or govc. It is a leaf: package vspc normalises what a host
// sends with it, package configs what a route names, and neither drags the
// other's dependencies in.
package vcuuid

import (
	"fmt"
)

// Normalize returns s in canonical lower-case 8-4-4-4-12 form
// ("01234567-89ab-cdef-fedc-ba9800000000"). It accepts, in any case and
// optionally wrapped in braces:
//
//   - ESXi's 47-byte spaced form, 16 hex pairs separated by spaces with a
//     dash (or a space) between the 8th and 9th pair:
//     "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00" (the VM-VC-UUID
//     a host sends);
//   - the canonical form "01234567-89ab-cdef-fedc-ba9800000000";
//   - 32 hex digits "0123456789abcdeffedcba9800000000".
//
// Anything else, including surrounding spaces, is an error.
//
// A string already in canonical form is returned as it is (no copy).
func Normalize(s string) (string, error) { return normalize(s) }

// NormalizeBytes is Normalize of b, without first copying b into a
// string (a host's VM-VC-UUID arrives as bytes; issue 17 counts every
// allocation of a VM connecting).
func NormalizeBytes(b []byte) (string, error) { return normalize(b) }

func normalize[T string | []byte](s T) (string, error) {
	t := s
	if len(t) >= 2 && t[0] == '{' && t[len(t)-1] == '}' {
		t = t[1 : len(t)-1]
	}
	var hex [32]byte
	n := 0
	take := func(c byte) bool {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
		case c >= 'A' && c <= 'F':
			c += 'a' - 'A'
		default:
			return false
		}
		hex[n] = c
		n++
		return true
	}
	ok := true
	switch len(t) {
	case 32:
		for i := range len(t) {
			ok = ok && take(t[i])
		}
	case 36:
		for i := range len(t) {
			switch i {
			case 8, 13, 18, 23:
				ok = ok && t[i] == '-'
			default:
				ok = ok && take(t[i])
			}
		}
	case 47:
		// pairs at offsets 0,3,6,...,45; separators at 2,5,...,44.
		for i := range len(t) {
			switch {
			case i%3 != 2:
				ok = ok && take(t[i])
			case i == 23:
				ok = ok && (t[i] == '-' || t[i] == ' ')
			default:
				ok = ok && t[i] == ' '
			}
		}
	default:
		ok = false
	}
	if !ok || n != 32 {
		return "", fmt.Errorf("invalid UUID %q: want 8-4-4-4-12 hex, 32 hex digits or ESXi's spaced form \"01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00\"", string(s))
	}
	var out [36]byte
	copy(out[0:8], hex[0:8])
	copy(out[9:13], hex[8:12])
	copy(out[14:18], hex[12:16])
	copy(out[19:23], hex[16:20])
	copy(out[24:36], hex[20:32])
	out[8], out[13], out[18], out[23] = '-', '-', '-', '-'
	if string(s) == string(out[:]) {
		return string(s), nil // already canonical: a string is not copied
	}
	return string(out[:]), nil
}
