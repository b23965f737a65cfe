package bridge_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/vspc-bridge/vspc-bridge/bridge"
	"github.com/vspc-bridge/vspc-bridge/internal/testwait"
	"github.com/vspc-bridge/vspc-bridge/vspc"
)

// tapRecorder records what a tap sees, per direction.
type tapRecorder struct {
	mu   sync.Mutex
	from map[bool][]byte
}

func (r *tapRecorder) fn(fromDevice bool, p []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.from[fromDevice] = append(r.from[fromDevice], p...)
}

func (r *tapRecorder) seen(fromDevice bool) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.from[fromDevice])
}

// TestTapSeesOneLinkOnly: a tap gets both directions of the link of the
// port it names, and not those of another port of the same VM (which the
// console alerts' Observer, keyed by VM name and route, cannot tell
// apart); the alert observer still sees everything; after untap the tap
// sees nothing more.
func TestTapSeesOneLinkOnly(t *testing.T) {
	var br *bridge.Bridge
	addr, obs := observedServer(t, "[policy]\nconnect_allow = [\"127.0.0.0/8\"]\n", func(b *bridge.Bridge) { br = b })
	c1, r1, remote1 := dialRemote(t, addr, "two-ports")
	c2, r2, _ := dialRemote(t, addr, "two-ports")
	svc1 := "tcp://" + remote1.Addr().String()

	if _, _, err := br.Tap(vspc.PortKeyOf("50112233-4455-6677-8899-aabbccddeeff", "two-ports", "com9"), func(bool, []byte) {}); !errors.Is(err, bridge.ErrNoLink) {
		t.Fatalf("tap on no link: %v", err)
	}
	rec := &tapRecorder{from: map[bool][]byte{}}
	replay, untap, err := br.Tap(vspc.PortKeyOf("50112233-4455-6677-8899-aabbccddeeff", "two-ports", svc1), rec.fn)
	if err != nil || replay != nil {
		t.Fatalf("tap: %v, replay %v (the bridge keeps no history)", err, replay)
	}
	r1.Write([]byte("login: "))
	readFull(t, c1, len("login: "))
	r2.Write([]byte("other port\r\n"))
	readFull(t, c2, len("other port\r\n"))
	c1.Write([]byte("root\r"))
	readFull(t, r1, len("root\r"))
	c2.Write([]byte("not this\r"))
	readFull(t, r2, len("not this\r"))
	testwait.For(t, "the tap to see both directions", func() bool { return rec.seen(true) == "login: " && rec.seen(false) == "root\r" })

	untap()
	untap() // idempotent
	r1.Write([]byte("after"))
	readFull(t, c1, len("after"))
	if rec.seen(true) != "login: " {
		t.Fatalf("tap after untap saw %q", rec.seen(true))
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if got := string(obs.from[true]); len(got) != len("login: other port\r\nafter") {
		t.Fatalf("the alert observer saw %q from the devices", got)
	}
}

// TestTapReplaysHistory: with SetTapHistory a new tap first gets the
// link's recent traffic, both directions in order, and then live traffic:
// every byte once, however the tap falls between the device's writes.
func TestTapReplaysHistory(t *testing.T) {
	var br *bridge.Bridge
	addr, _ := observedServer(t, "[policy]\nconnect_allow = [\"127.0.0.0/8\"]\n", func(b *bridge.Bridge) {
		br = b
		b.SetTapHistory(64 << 10)
	})
	c, r, ln := dialRemote(t, addr, "history")
	key := vspc.PortKeyOf("50112233-4455-6677-8899-aabbccddeeff", "history", "tcp://"+ln.Addr().String())
	r.Write([]byte("login: "))
	readFull(t, c, len("login: "))
	c.Write([]byte("root\r"))
	readFull(t, r, len("root\r"))

	// The device keeps talking while the tap is added.
	var want []byte
	for i := range 300 {
		want = fmt.Appendf(want, "line %03d\r\n", i)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for p := want; len(p) > 0; p = p[12:] {
			r.Write(p[:12])
		}
	})
	rec := &tapRecorder{from: map[bool][]byte{}}
	replay, untap, err := br.Tap(key, rec.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer untap()
	readFull(t, c, len(want))
	wg.Wait()
	if len(replay) < 2 || replay[0].FromDevice != true || string(replay[0].Data) != "login: " || replay[1].FromDevice || string(replay[1].Data) != "root\r" {
		t.Fatalf("replay %+v", replay)
	}
	var fromDevice []byte
	for _, ch := range replay[2:] {
		if !ch.FromDevice {
			t.Fatalf("replay %+v", replay)
		}
		fromDevice = append(fromDevice, ch.Data...)
	}
	testwait.For(t, "the tap to see the rest", func() bool { return len(fromDevice)+len(rec.seen(true)) >= len(want) })
	if got := string(fromDevice) + rec.seen(true); got != string(want) {
		t.Fatalf("replay (%d bytes) and live (%d bytes) do not make the device's output once:\n%q", len(fromDevice), len(rec.seen(true)), got)
	}
}
