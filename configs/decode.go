package configs

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/hashicorp/go-multierror"
)

// Parse parses and validates a config file's contents. name is used in
// errors and as Config.Source. Keys the file leaves out get their defaults
// (see example.toml).
//
// Parse reports every problem at once: the error is a *multierror.Error
// whose Errors are *Error values, sorted by line, each naming the file,
// line and key ("configs: bridge.toml:12: vspc.handshake_timeout: time:
// unknown unit \"x\" in duration \"10x\""). A TOML syntax error stops
// parsing, so it is reported alone.
//
// The file is decoded into a generic map first and then key by key, so one
// value of the wrong type does not hide the problems after it. Unknown keys
// are errors.
func Parse(name string, data []byte) (*Config, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		e := &Error{File: name, Err: err}
		var pe toml.ParseError
		if errors.As(err, &pe) {
			e.Line = pe.Position.Line
			e.Err = &syntaxError{pe}
		}
		return nil, &multierror.Error{Errors: []error{e}, ErrorFormat: formatErrorList}
	}
	d := &decoder{set: map[string]bool{}, bad: map[string]bool{}}
	c := defaults()
	d.table("", raw, reflect.ValueOf(&c).Elem())
	d.validate(&c)
	if len(d.errs) > 0 {
		return nil, d.report(name, data)
	}
	c.Source = name
	return &c, nil
}

// keyError is a problem with one key, before it is given a line.
type keyError struct {
	key string
	err error
}

// decoder copies a generic TOML map into a Config, collecting problems.
type decoder struct {
	errs []keyError
	set  map[string]bool // key paths present in the file
	bad  map[string]bool // key paths whose value had the wrong type
}

func (d *decoder) errorf(key, format string, args ...any) {
	d.errs = append(d.errs, keyError{key, fmt.Errorf(format, args...)})
}

func (d *decoder) fail(key string, err error) {
	d.errs = append(d.errs, keyError{key, err})
}

// badValue records a value that could not be decoded; the key keeps its
// default and validation does not complain about it again.
func (d *decoder) badValue(key, format string, args ...any) {
	d.bad[key] = true
	d.errorf(key, format, args...)
}

// report turns the collected problems into the error Parse returns.
func (d *decoder) report(name string, data []byte) error {
	lines := scanKeyLines(string(data))
	errs := make([]*Error, len(d.errs))
	for i, ke := range d.errs {
		errs[i] = &Error{File: name, Line: lines.find(ke.key), Key: ke.key, Err: ke.err}
	}
	slices.SortStableFunc(errs, func(a, b *Error) int {
		la, lb := a.Line, b.Line
		if la == 0 {
			la = math.MaxInt
		}
		if lb == 0 {
			lb = math.MaxInt
		}
		if la != lb {
			return la - lb
		}
		return strings.Compare(a.Key, b.Key)
	})
	m := &multierror.Error{ErrorFormat: formatErrorList}
	for _, e := range errs {
		m.Errors = append(m.Errors, e)
	}
	return m
}

// field returns the field of struct rv whose toml tag is key.
func field(rv reflect.Value, key string) (reflect.Value, bool) {
	t := rv.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
		if sf.IsExported() && name != "" && name != "-" && name == key {
			return rv.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// tableKeys lists the toml keys of struct type t.
func tableKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
		if sf.IsExported() && name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}

// table decodes the TOML table m at path into the struct rv.
func (d *decoder) table(path string, m map[string]any, rv reflect.Value) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		key := joinKey(path, k)
		f, ok := field(rv, k)
		if !ok {
			where := "at the top level"
			switch {
			case strings.HasSuffix(path, "]"):
				where = "in [[" + parentKey(path) + "]]"
			case path != "":
				where = "in [" + path + "]"
			}
			d.errorf(key, "unknown key (valid %s: %s)", where, strings.Join(tableKeys(rv.Type()), ", "))
			continue
		}
		d.set[key] = true
		d.value(key, m[k], f)
	}
}

// value decodes one TOML value into f, or records why it cannot.
func (d *decoder) value(key string, v any, f reflect.Value) {
	switch p := f.Addr().Interface().(type) {
	case *Duration:
		s, ok := v.(string)
		if !ok {
			d.badValue(key, `want a duration string such as "10s", got %s`, describe(v))
			return
		}
		if err := p.UnmarshalText([]byte(s)); err != nil {
			d.badValue(key, "%w", err)
		}
		return
	case *Size:
		switch x := v.(type) {
		case int64:
			if x < 0 {
				d.badValue(key, "size %d is negative", x)
				return
			}
			*p = Size(x)
		case string:
			z, err := ParseSize(x)
			if err != nil {
				d.badValue(key, "%w", err)
				return
			}
			*p = z
		default:
			d.badValue(key, `want a size (an integer number of bytes, or a string such as "64KiB"), got %s`, describe(v))
		}
		return
	}
	switch f.Kind() {
	case reflect.Pointer: // an optional table: present when the file has it
		if f.IsNil() {
			f.Set(reflect.New(f.Type().Elem()))
		}
		d.value(key, v, f.Elem())
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			d.badValue(key, "want a string, got %s", describe(v))
			return
		}
		f.SetString(s)
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			d.badValue(key, "want true or false, got %s", describe(v))
			return
		}
		f.SetBool(b)
	case reflect.Int:
		n, ok := v.(int64)
		if !ok {
			d.badValue(key, "want an integer, got %s", describe(v))
			return
		}
		if f.OverflowInt(n) {
			d.badValue(key, "%d is out of range", n)
			return
		}
		f.SetInt(n)
	case reflect.Slice:
		switch f.Type().Elem().Kind() {
		case reflect.String:
			arr, ok := v.([]any)
			if !ok {
				d.badValue(key, "want an array of strings, got %s", describe(v))
				return
			}
			out := make([]string, 0, len(arr))
			for i, e := range arr {
				s, ok := e.(string)
				if !ok {
					d.badValue(indexKey(key, i), "want a string, got %s", describe(e))
				}
				out = append(out, s) // keep indices; validation skips bad ones
			}
			f.Set(reflect.ValueOf(out))
		case reflect.Struct:
			tables, ok := tablesOf(v)
			if !ok {
				d.badValue(key, "want an array of tables ([[%s]]), got %s", key, describe(v))
				return
			}
			out := reflect.MakeSlice(f.Type(), len(tables), len(tables))
			for i, t := range tables {
				d.table(indexKey(key, i), t, out.Index(i))
			}
			f.Set(out)
		default:
			panic("configs: unsupported slice field " + key)
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			d.badValue(key, "want a table ([%s]), got %s", key, describe(v))
			return
		}
		d.table(key, m, f)
	default:
		panic("configs: unsupported field " + key)
	}
}

// tablesOf returns v as a list of tables if it is an array of tables.
func tablesOf(v any) ([]map[string]any, bool) {
	switch x := v.(type) {
	case []map[string]any:
		return x, true
	case []any:
		out := make([]map[string]any, len(x))
		for i, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, false
			}
			out[i] = m
		}
		return out, true
	}
	return nil, false
}

// describe names the TOML type of a decoded value, with the value for
// scalars.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 40 {
			x = x[:40] + "…"
		}
		return fmt.Sprintf("string %q", x)
	case int64:
		return fmt.Sprintf("integer %d", x)
	case float64:
		return fmt.Sprintf("float %v", x)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date/time"
}
