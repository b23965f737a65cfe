package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"
)

// cmdHashPassword prints the bcrypt hash of a password for a [[user]]
// table's password key. On a terminal it asks twice without echo;
// otherwise it reads one line from stdin (for scripts:
// printf '%s\n' "$PW" | vspc-bridge hash-password).
func cmdHashPassword(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hash-password", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cost := fs.Int("cost", 10, fmt.Sprintf("bcrypt cost, %d..%d (each step doubles the time a login check takes)", bcrypt.MinCost, bcrypt.MaxCost))
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vspc-bridge hash-password [-cost N]\n\nPrints the bcrypt hash of a password for [[user]] password = \"...\". On a terminal it asks twice without echo; otherwise it reads one line from standard input.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	if *cost < bcrypt.MinCost || *cost > bcrypt.MaxCost {
		return fmt.Errorf("-cost %d: want %d..%d", *cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	var pw []byte
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		var err error
		if pw, err = askTwice(f, stderr); err != nil {
			return err
		}
	} else {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && (err != io.EOF || line == "") {
			return fmt.Errorf("reading the password from standard input: %w", cmpErr(err))
		}
		pw = []byte(strings.TrimRight(line, "\r\n"))
	}
	if len(pw) == 0 {
		return errors.New("empty password")
	}
	if len(pw) > 72 {
		return fmt.Errorf("password is %d bytes; bcrypt uses at most 72", len(pw))
	}
	h, err := bcrypt.GenerateFromPassword(pw, *cost)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, string(h))
	return nil
}

// askTwice reads the password twice from the terminal f, prompting on w.
// The terminal is in raw mode before the first prompt is written, so
// nothing typed (or pasted) after a prompt appears can be echoed.
func askTwice(f *os.File, w io.Writer) ([]byte, error) {
	fd := int(f.Fd())
	old, err := term.MakeRaw(fd)
	if err != nil {
		return nil, err
	}
	defer term.Restore(fd, old)
	t := term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{f, w}, "")
	first, err := t.ReadPassword("Password: ")
	if err != nil {
		return nil, errors.New("cancelled")
	}
	again, err := t.ReadPassword("Again: ")
	if err != nil {
		return nil, errors.New("cancelled")
	}
	if first != again {
		return nil, errors.New("the two passwords differ")
	}
	return []byte(first), nil
}

// cmpErr names an empty standard input.
func cmpErr(err error) error {
	if err == io.EOF {
		return errors.New("no input")
	}
	return err
}
