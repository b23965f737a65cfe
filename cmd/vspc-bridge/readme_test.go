package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestREADMECLI checks the README's CLI reference against the commands:
// the block under "`vspc-bridge -h`:" is the top-level usage, and each
// command's usage line ("COMMAND -h") begins a row of the table.
func TestREADMECLI(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)

	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"-h"}, nil, &out, &errb); code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	var usage []string
	for _, l := range strings.Split(out.String()+errb.String(), "\n") {
		if strings.HasPrefix(l, "  vspc-bridge ") {
			usage = append(usage, strings.TrimPrefix(l, "  "))
		}
	}
	const intro = "`vspc-bridge -h`:\n\n```\n"
	i := strings.Index(readme, intro)
	if i < 0 {
		t.Fatal("README.md has no `vspc-bridge -h` block")
	}
	block, _, _ := strings.Cut(readme[i+len(intro):], "```")
	if got, want := strings.Split(strings.TrimSpace(block), "\n"), usage; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("README.md's `vspc-bridge -h` block:\n%s\nthe command prints:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	rows := map[string]bool{}
	for _, l := range strings.Split(readme, "\n") {
		if strings.HasPrefix(l, "| `") {
			first, _, _ := strings.Cut(l[3:], "`")
			rows[strings.ReplaceAll(first, `\|`, "|")] = true
		}
	}
	for _, cmd := range [][]string{
		{"serve"}, {"check-config"}, {"status"}, {"sessions"}, {"reload"}, {"gen-cert"},
		{"hash-password"}, {"probe"}, {"simulate-vm"}, {"etcd"}, {"cluster", "init"},
		{"vc", "audit"}, {"vc", "provision"}, {"vc", "preflight"},
	} {
		out.Reset()
		errb.Reset()
		if code := run(t.Context(), append(cmd, "-h"), nil, &out, &errb); code != 0 {
			t.Errorf("%s -h: exit %d", strings.Join(cmd, " "), code)
			continue
		}
		var line string
		for _, l := range strings.Split(errb.String()+out.String(), "\n") {
			if u, ok := strings.CutPrefix(l, "usage: vspc-bridge "); ok {
				line = u
				break
			}
		}
		if line == "" {
			t.Errorf("%s -h prints no usage line", strings.Join(cmd, " "))
			continue
		}
		if !rows[line] {
			t.Errorf("README.md's CLI reference has no row for %q (the usage line of %s -h)", line, strings.Join(cmd, " "))
		}
	}
}
