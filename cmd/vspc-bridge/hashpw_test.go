package main

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/vspc-bridge/vspc-bridge/configs"
)

// TestHashPassword: the printed hash verifies the password, carries the
// cost asked for, and is accepted by a [[user]] table.
func TestHashPassword(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"hash-password", "-cost", "5"}, strings.NewReader("s3cret pass\n"), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	h := strings.TrimSpace(out.String())
	if err := bcrypt.CompareHashAndPassword([]byte(h), []byte("s3cret pass")); err != nil {
		t.Fatalf("hash %q does not verify: %v", h, err)
	}
	if c, _ := bcrypt.Cost([]byte(h)); c != 5 {
		t.Errorf("cost %d, want 5", c)
	}
	if _, err := configs.Parse("t.toml", []byte("[vspc]\nlisten = \"127.0.0.1:0\"\n[[user]]\nname = \"alice\"\npassword = \""+h+"\"\naccess = [{vm = \"*\", mode = \"rw\"}]\n")); err != nil {
		t.Errorf("config with the hash: %v", err)
	}
	// Without a trailing newline too (printf %s).
	out.Reset()
	if code := run(t.Context(), []string{"hash-password", "-cost", "4"}, strings.NewReader("pw"), &out, &errb); code != 0 || bcrypt.CompareHashAndPassword(bytes.TrimSpace(out.Bytes()), []byte("pw")) != nil {
		t.Fatalf("exit %d, %q", code, out.String())
	}
	for _, c := range []struct {
		args  []string
		in    string
		code  int
		wants string
	}{
		{nil, "\n", 1, "empty password"},
		{nil, "", 1, "no input"},
		{nil, strings.Repeat("x", 73) + "\n", 1, "at most 72"},
		{[]string{"-cost", "99"}, "pw\n", 1, "want 4..31"},
		{[]string{"extra"}, "pw\n", 2, ""},
	} {
		errb.Reset()
		if code := run(t.Context(), append([]string{"hash-password"}, c.args...), strings.NewReader(c.in), &out, &errb); code != c.code || !strings.Contains(errb.String(), c.wants) {
			t.Errorf("%v %q: exit %d, stderr %q; want %d and %q", c.args, c.in, code, errb.String(), c.code, c.wants)
		}
	}
}
