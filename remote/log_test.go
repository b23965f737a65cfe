package remote_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
)

// TestConsoleLogRotation: 10 MiB of console output (every byte value,
// IAC included) with 1 MiB rotation: the files, oldest first, hold
// exactly what the VM sent, and are named after the VM, UUID and service.
func TestConsoleLogRotation(t *testing.T) {
	logDir := filepath.Join(t.TempDir(), "consoles")
	h := newHarness(t, fmt.Sprintf(`log_dir = %q
log_max_size = "1MiB"
log_max_files = 12
log_buffer = "32MiB"`, logDir))
	const uuid = "42100000-0000-0000-0000-00000000a006"
	vm := h.vm("web-6", uuid, "vSPC.py?port=com1")
	ci := h.console("web-6")
	wantPath := filepath.Join(logDir, "web-6_"+uuid+"_vSPC.py_port_com1.log")
	if ci.LogFile != wantPath {
		t.Fatalf("log file %q, want %q", ci.LogFile, wantPath)
	}

	const total = 10 << 20
	sent := make([]byte, total)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range sent {
		sent[i] = byte(rng.Uint32())
	}
	for off := 0; off < total; off += 64 << 10 {
		if _, err := vm.Write(sent[off : off+64<<10]); err != nil {
			t.Fatal(err)
		}
	}
	files := []string{}
	var size int64
	testwait.For(t, "the log files to hold everything", func() bool {
		files, size = files[:0], 0
		for i := 12; i >= 1; i-- {
			p := fmt.Sprintf("%s.%d", wantPath, i)
			if st, err := os.Stat(p); err == nil {
				files = append(files, p)
				size += st.Size()
			}
		}
		files = append(files, wantPath)
		if st, err := os.Stat(wantPath); err == nil {
			size += st.Size()
		}
		return size == total
	})
	if len(files) != 10 {
		t.Fatalf("%d files, want 10 (1 MiB each): %v", len(files), files)
	}
	var got []byte
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 1<<20 {
			t.Fatalf("%s: %d bytes, want 1 MiB", p, len(b))
		}
		got = append(got, b...)
	}
	if !bytes.Equal(got, sent) {
		t.Fatal("the log files differ from what the VM sent")
	}
	if lost := h.console("web-6").LogLost; lost != 0 {
		t.Fatalf("%d bytes lost", lost)
	}
}
