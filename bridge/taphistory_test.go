package bridge

import (
	"math/rand/v2"
	"testing"
)

// histByte is one byte of traffic with its direction.
type histByte struct {
	dev bool
	b   byte
}

// TestTapHistoryKeepsTheNewest: whatever is added, the history is the
// newest end of the traffic, in order with directions, within max bytes
// with headers, filling max (less one header) once the traffic has
// overflowed it, in a buffer of at most 2*max.
func TestTapHistoryKeepsTheNewest(t *testing.T) {
	for _, max := range []int{3, 4, 10, 64, 1000, 70000} {
		rng := rand.New(rand.NewPCG(uint64(max), 1))
		h := &tapHistory{max: max}
		var all []histByte
		rounds := 2000
		if max > 1000 {
			rounds = 300
		}
		for i := range rounds {
			n := rng.IntN(40) + 1
			switch rng.IntN(20) {
			case 0:
				n = rng.IntN(3 * max)
			case 1:
				if max > 1000 {
					n = 40000 // more than a record holds
				}
			}
			dev := rng.IntN(3) == 0
			p := make([]byte, n)
			for j := range p {
				p[j] = byte(rng.Uint32())
				all = append(all, histByte{dev, p[j]})
			}
			h.add(dev, p)
			if len(all) > 2*max+40000 {
				all = all[len(all)-max:] // what the history can hold, and more
			}

			var got []histByte
			used := 0
			for _, c := range h.chunks() {
				used += 2 + len(c.Data)
				if len(c.Data) == 0 {
					t.Fatalf("max %d, add %d: an empty record", max, i)
				}
				for _, b := range c.Data {
					got = append(got, histByte{c.FromDevice, b})
				}
			}
			if used != len(h.buf)-h.start || used > max {
				t.Fatalf("max %d, add %d: %d bytes used, buf %d from %d", max, i, used, len(h.buf), h.start)
			}
			if cap(h.buf) > 2*max {
				t.Fatalf("max %d, add %d: cap %d", max, i, cap(h.buf))
			}
			if len(got) > len(all) || !equalHist(got, all[len(all)-len(got):]) {
				t.Fatalf("max %d, add %d: the history is not the end of the traffic", max, i)
			}
			if len(got) < len(all) && used < max-2 {
				t.Fatalf("max %d, add %d: %d of %d bytes used after an overflow", max, i, used, max)
			}
		}
	}
}

func equalHist(a, b []histByte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestTapHistoryRecords: traffic in one direction shares a record; a
// change of direction starts one; cutting the front keeps the newest.
func TestTapHistoryRecords(t *testing.T) {
	h := &tapHistory{max: 16}
	h.add(true, []byte("abc"))
	h.add(true, []byte("de"))
	h.add(false, []byte("x"))
	c := h.chunks()
	if len(c) != 2 || !c[0].FromDevice || string(c[0].Data) != "abcde" || c[1].FromDevice || string(c[1].Data) != "x" {
		t.Fatalf("chunks %+v", c)
	}
	// 7+3+12 = 22 > 16: the first record (7) goes.
	h.add(true, []byte("0123456789"))
	if c := h.chunks(); len(c) != 2 || string(c[0].Data) != "x" || string(c[1].Data) != "0123456789" || !c[1].FromDevice {
		t.Fatalf("after dropping a record: %+v", c)
	}
	// 15+3 = 18 > 16: "x" goes (cutting 2 bytes from a 1-byte record).
	h.add(false, []byte("y"))
	// 12+3+4 = 19 > 16: 3 bytes are cut from the front of "0123456789".
	h.add(true, []byte("zz"))
	c = h.chunks()
	if len(c) != 3 || string(c[0].Data) != "3456789" || !c[0].FromDevice || string(c[1].Data) != "y" || string(c[2].Data) != "zz" {
		t.Fatalf("after cutting a record: %+v", c)
	}
	if len(h.buf)-h.start != 16 {
		t.Fatalf("%d bytes used", len(h.buf)-h.start)
	}
}

// BenchmarkObserveWithHistory is the forwarding path's cost of a link's
// observer, per chunk of 64 bytes, without and with tap history (16 KiB):
// the history is a lock and a copy into a buffer that stops growing.
func BenchmarkObserveWithHistory(b *testing.B) {
	p := make([]byte, 64)
	for _, hist := range []int{0, 16 << 10} {
		b.Run(map[int]string{0: "off", 16 << 10: "16KiB"}[hist], func(b *testing.B) {
			o := &linkObserver{histMax: hist}
			o.add(&tap{fn: func(bool, []byte) {}})
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				o.ObserveConsole("vm", "route", i%4 == 0, p)
			}
		})
	}
}
