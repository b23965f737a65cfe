package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/devices/devicetest"
)

// keepalivedConf is the keepalived VIP topology's example.
var keepalivedConf = filepath.Join("..", "..", "configs", "keepalived.conf")

// The keepalived VIP topology's example, configs/keepalived.conf, passes
// keepalived's own configuration test as shipped, and the README's copy
// is the file without its comments.
//
// keepalived before 2.2.8 (Debian 12 ships 2.2.7) kills itself with
// SIGTERM in `-t` once it checks the security of a script run as
// script_user (acassen/keepalived#2587 and #2617, fixed by aae8e91 in
// 2.2.8), after it has parsed the file and checked everything but the
// scripts. There the test also runs `-t` on the file without its two
// script security lines: its only complaint must be exactly that
// scripts run without script security (so nothing else is wrong).
func TestKeepalivedConfig(t *testing.T) {
	bin := devicetest.Require(t, "keepalived")
	run := func(path string) (string, error) {
		out, err := exec.Command(bin, "-t", "-l", "-f", path).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	out, err := run(keepalivedConf)
	var ee *exec.ExitError
	switch {
	case err == nil:
		if out != "" {
			t.Errorf("keepalived -t %s passed but said:\n%s", keepalivedConf, out)
		}
	case errors.As(err, &ee) && ee.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM && keepalivedBefore(t, bin, 2, 2, 8):
		t.Logf("keepalived -t was terminated (keepalived < 2.2.8, acassen/keepalived#2617); checking the file without script security instead")
		if out != "" {
			t.Errorf("keepalived -t %s said before it was terminated:\n%s", keepalivedConf, out)
		}
		src, err := os.ReadFile(keepalivedConf)
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		for _, l := range strings.Split(string(src), "\n") {
			if f := strings.Fields(l); len(f) > 0 && (f[0] == "enable_script_security" || f[0] == "script_user") {
				continue
			}
			kept = append(kept, l)
		}
		if len(kept) != strings.Count(string(src), "\n")+1-2 {
			t.Fatalf("configs/keepalived.conf no longer has enable_script_security and script_user once each: update this test")
		}
		path := filepath.Join(t.TempDir(), "keepalived.conf")
		if err := os.WriteFile(path, []byte(strings.Join(kept, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := run(path)
		if want := "SECURITY VIOLATION - scripts are being executed but script_security not enabled."; err == nil || out != want {
			t.Errorf("keepalived -t without script security: %v, said:\n%s\nwant only %q", err, out, want)
		}
	default:
		t.Errorf("keepalived -t %s: %v\n%s", keepalivedConf, err, out)
	}

	// The README's copy.
	src, err := os.ReadFile(keepalivedConf)
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	const intro = "`configs/keepalived.conf` without its comments:\n\n```\n"
	i := strings.Index(string(readme), intro)
	if i < 0 {
		t.Fatalf("README: no %q", intro)
	}
	block, _, ok := strings.Cut(string(readme)[i+len(intro):], "```\n")
	if !ok {
		t.Fatal("README: the keepalived block does not end")
	}
	if want := withoutComments(string(src)); block != want {
		t.Errorf("README's keepalived.conf differs from configs/keepalived.conf without its comments; want:\n%s", want)
	}
}

// withoutComments is a keepalived file without its comment lines, its
// blank lines collapsed to one and none at either end.
func withoutComments(src string) string {
	var out []string
	for _, l := range strings.Split(src, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if strings.TrimSpace(l) == "" && (len(out) == 0 || out[len(out)-1] == "") {
			continue
		}
		out = append(out, l)
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return strings.Join(out, "\n") + "\n"
}

// keepalivedBefore reports whether bin's version is below major.minor.patch.
func keepalivedBefore(t *testing.T, bin string, major, minor, patch int) bool {
	out, _ := exec.Command(bin, "--version").CombinedOutput()
	m := regexp.MustCompile(`Keepalived v(\d+)\.(\d+)\.(\d+)`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("keepalived --version: no version in:\n%s", out)
	}
	v := [3]int{}
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	want := [3]int{major, minor, patch}
	for i := range v {
		if v[i] != want[i] {
			return v[i] < want[i]
		}
	}
	return false
}
