package atomicfile_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/internal/atomicfile"
)

// only lists dir and fails unless it holds exactly want (no temporary
// file left behind).
func only(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s holds %q, want %q", dir, got, want)
	}
}

func TestWriteCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "tls.key")
	for _, step := range []struct {
		data string
		perm os.FileMode
	}{{"first\n", 0o600}, {"second, longer\n", 0o644}} {
		if err := atomicfile.Write(name, []byte(step.data), step.perm); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(name)
		if err != nil || string(b) != step.data {
			t.Fatalf("read back %q, %v; want %q", b, err, step.data)
		}
		st, err := os.Stat(name)
		if err != nil || st.Mode().Perm() != step.perm {
			t.Fatalf("mode %v, %v; want %v", st.Mode().Perm(), err, step.perm)
		}
		only(t, dir, "tls.key")
	}
}

// A write that cannot finish leaves what was there as it was and no
// temporary file; the error is the os package's, naming the file.
func TestWriteFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "state.json")
	if err := atomicfile.Write(name, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory where the rename would put the file: the rename fails
	// after the temporary file was written.
	blocked := filepath.Join(dir, "blocked")
	if err := os.Mkdir(blocked, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blocked, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var le *os.LinkError
	if err := atomicfile.Write(blocked, []byte("new"), 0o600); !errors.As(err, &le) || le.New != blocked {
		t.Fatalf("write over a non-empty directory: %v, want the rename's *os.LinkError", err)
	}
	if b, err := os.ReadFile(name); err != nil || string(b) != "old" {
		t.Fatalf("the other file changed: %q, %v", b, err)
	}
	only(t, dir, "blocked", "state.json")

	// No directory to write in at all.
	missing := filepath.Join(dir, "no-such-dir", "f")
	var pe *fs.PathError
	if err := atomicfile.Write(missing, []byte("x"), 0o600); !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) {
		t.Fatalf("write into a missing directory: %v, want a *fs.PathError for ErrNotExist", err)
	}
}
