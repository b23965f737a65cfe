package vcuuid

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	const canon = "01234567-89ab-cdef-fedc-ba9800000000"
	good := []struct{ name, in string }{
		{"esxi spaced", "01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00"},
		{"esxi spaced upper", "01 23 45 67 89 AB CD EF-FE DC BA 98 00 00 00 00"},
		{"esxi all spaces", "01 23 45 67 89 ab cd ef fe dc ba 98 00 00 00 00"},
		{"canonical", canon},
		{"canonical upper", "01234567-89AB-CDEF-FEDC-BA9800000000"},
		{"braces", "{01234567-89ab-cdef-fedc-ba9800000000}"},
		{"32 hex", "0123456789abcdeffedcba9800000000"},
		{"32 hex braces mixed case", "{0123456789ABcdeffedcba9800000000}"},
		{"esxi spaced braces", "{01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00}"},
	}
	for _, tt := range good {
		got, err := Normalize(tt.in)
		if err != nil || got != canon {
			t.Errorf("%s: Normalize(%q) = %q, %v; want %q", tt.name, tt.in, got, err, canon)
		}
		if got, err := NormalizeBytes([]byte(tt.in)); err != nil || got != canon {
			t.Errorf("%s: NormalizeBytes(%q) = %q, %v; want %q", tt.name, tt.in, got, err, canon)
		}
	}
	bad := []string{
		"",
		"not-a-uuid",
		"{}",
		"0123456789abcdeffedcba980000000",   // 31 hex
		"0123456789abcdeffedcba98000000000", // 33 hex
		"0123456789abcdeffedcba980000000g",  // non-hex
		"01234567-89ab-cdef-fedc_ba9800000000",
		"0123456-789ab-cdef-fedc-ba9800000000", // dash misplaced
		"01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 0", // short
		"01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 0g",
		"01-23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00", // dash in wrong place
		"0 123 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00",
		" 01234567-89ab-cdef-fedc-ba9800000000",
		"01234567-89ab-cdef-fedc-ba9800000000 ",
		"{01234567-89ab-cdef-fedc-ba9800000000",
		"urn:uuid:01234567-89ab-cdef-fedc-ba9800000000",
		"+1234567-89ab-cdef-fedc-ba9800000000",
	}
	for _, in := range bad {
		if got, err := Normalize(in); err == nil {
			t.Errorf("Normalize(%q) = %q, want error", in, got)
		}
		_, err := Normalize(in)
		if got, berr := NormalizeBytes([]byte(in)); berr == nil || berr.Error() != err.Error() {
			t.Errorf("NormalizeBytes(%q) = %q, %v; want Normalize's error %v", in, got, berr, err)
		}
	}
}

// FuzzNormalizeUUID checks that accepted UUIDs come out canonical and stay
// put.
func FuzzNormalizeUUID(f *testing.F) {
	f.Add("01 23 45 67 89 ab cd ef-fe dc ba 98 00 00 00 00")
	f.Add("{01234567-89AB-cdef-fedc-ba9800000000}")
	f.Add("0123456789abcdeffedcba9800000000")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := Normalize(s)
		if b, berr := NormalizeBytes([]byte(s)); b != u || (berr == nil) != (err == nil) {
			t.Fatalf("NormalizeBytes(%q) = %q, %v; Normalize gave %q, %v", s, b, berr, u, err)
		}
		if err != nil {
			return
		}
		if len(u) != 36 || strings.ToLower(u) != u {
			t.Fatalf("Normalize(%q) = %q is not canonical", s, u)
		}
		if v, err := Normalize(u); err != nil || v != u {
			t.Fatalf("Normalize not idempotent on %q: %q, %v", u, v, err)
		}
	})
}
