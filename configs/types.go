package configs

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written in the config as a Go duration string
// ("200ms", "10s", "2m", "1h30m"). Bare numbers are rejected: a unit is
// always required.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string (time.ParseDuration).
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalText returns the duration in time.Duration.String form ("1m30s").
func (d Duration) MarshalText() ([]byte, error) {
	return []byte(d.Duration.String()), nil
}

// Size is a byte count. In the config it is either a TOML integer (bytes) or
// a string: a non-negative decimal integer, optionally followed by a unit
// B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024). Units
// are case-insensitive and may be separated from the number by spaces:
// 4096, "4096", "64KiB", "1 MiB", "2MB".
type Size int64

// Binary and decimal size units.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	KB  Size = 1000
	MB  Size = 1000 * KB
	GB  Size = 1000 * MB
)

// sizeUnits maps a lower-case unit suffix to its multiplier.
func sizeUnit(u string) (Size, bool) {
	switch strings.ToLower(u) {
	case "", "b":
		return 1, true
	case "kib":
		return KiB, true
	case "mib":
		return MiB, true
	case "gib":
		return GiB, true
	case "kb":
		return KB, true
	case "mb":
		return MB, true
	case "gb":
		return GB, true
	}
	return 0, false
}

// ParseSize parses a size as described on Size.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("invalid size %q: want an integer number of bytes or a number with a unit (KiB, MiB, GiB, KB, MB, GB)", s)
	}
	unit := strings.TrimSpace(t[i:])
	mult, ok := sizeUnit(unit)
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q (want B, KiB, MiB, GiB, KB, MB or GB)", s, unit)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/int64(mult) {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return Size(n) * mult, nil
}

// UnmarshalText parses a size as described on Size.
func (z *Size) UnmarshalText(text []byte) error {
	v, err := ParseSize(string(text))
	if err != nil {
		return err
	}
	*z = v
	return nil
}

// MarshalText returns String.
func (z Size) MarshalText() ([]byte, error) {
	if z < 0 {
		return nil, errors.New("configs: negative size")
	}
	return []byte(z.String()), nil
}

// String returns the size with the largest binary unit that divides it
// exactly ("1MiB", "6KiB"), or a plain byte count ("1500").
func (z Size) String() string {
	switch {
	case z != 0 && z%GiB == 0:
		return strconv.FormatInt(int64(z/GiB), 10) + "GiB"
	case z != 0 && z%MiB == 0:
		return strconv.FormatInt(int64(z/MiB), 10) + "MiB"
	case z != 0 && z%KiB == 0:
		return strconv.FormatInt(int64(z/KiB), 10) + "KiB"
	}
	return strconv.FormatInt(int64(z), 10)
}
