package configs

import (
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Error is one problem found in a config file. Parse and Load return every
// problem in a file at once, as a *multierror.Error (from
// github.com/hashicorp/go-multierror) whose Errors are *Error values sorted
// by line, and whose message lists one problem per line.
type Error struct {
	File string // the name given to Parse, or the path given to Load
	Line int    // 1-based line of the offending key, table or value; 0 if unknown
	Key  string // dotted key path ("vspc.listen", "route[1].device", "policy.connect_allow[2]"); empty for syntax errors
	Err  error  // what is wrong; for syntax errors it unwraps to a toml.ParseError
}

// Error returns "configs: FILE:LINE: KEY: problem", leaving out the line or
// key when they are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("configs: ")
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying problem.
func (e *Error) Unwrap() error { return e.Err }

// formatErrorList is the multierror.ErrorFormatFunc of the errors this
// package returns: one error per line, no header.
func formatErrorList(errs []error) string {
	var b strings.Builder
	for i, err := range errs {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(err.Error())
	}
	return b.String()
}

// syntaxError is a TOML syntax error without its position (Error carries
// the line).
type syntaxError struct{ pe toml.ParseError }

func (e *syntaxError) Error() string { return "toml: " + e.pe.Message }
func (e *syntaxError) Unwrap() error { return e.pe }
