package telnet

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// qInput is what one cell of the RFC 1143 table reacts to.
type qInput uint8

const (
	recvYes qInput = iota // the peer's WILL (Remote side) or DO (Local side)
	recvNo                // the peer's WONT or DONT
	enable                // our Enable
	disable               // our Disable
)

func (in qInput) String() string {
	return [...]string{"peer-yes", "peer-no", "Enable", "Disable"}[in]
}

// qReply is what a cell sends: nothing, our yes verb (DO for Remote, WILL
// for Local) or our no verb (DONT, WONT).
type qReply uint8

const (
	sendNothing qReply = iota
	sendYes
	sendNo
)

// qChange is the Change that Receive reports.
type qChange uint8

const (
	noChange qChange = iota
	turnedOn
	turnedOff
)

// qPolicy is whether we accept the option when the cell is entered.
type qPolicy uint8

const (
	anyPolicy qPolicy = iota // the cell is the same either way: run both
	accepting
	refusing
)

func stateName(s qState) string {
	name := [...]string{"NO", "YES", "WANTNO", "WANTYES"}[s&qStateMask]
	switch {
	case s&qStateMask == qWantNo || s&qStateMask == qWantYes:
		if s&qOpposite != 0 {
			return name + "/OPPOSITE"
		}
		return name + "/EMPTY"
	case s&qOpposite != 0:
		return name + "/OPPOSITE(invalid)"
	}
	return name
}

// rfc1143 is RFC 1143 §7 as a table. RFC 1143 keeps a queue bit only in
// the WANTNO and WANTYES states ("usq: a queue bit (EMPTY/OPPOSITE) if us
// is WANTNO or WANTYES"), so one side of an option is in one of six
// states; each meets the four inputs. The rule column is the RFC's text
// for "him" (the Remote side); for a Local row read "us" for "him", DO for
// WILL and WILL for DO.
var rfc1143 = []struct {
	from   qState
	policy qPolicy
	in     qInput
	to     qState
	send   qReply
	change qChange
	rule   string
}{
	// Upon receipt of WILL, we choose based upon him and himq:
	{qNo, accepting, recvYes, qYes, sendYes, turnedOn, "NO: if we agree that he should enable, him=YES, send DO"},
	{qNo, refusing, recvYes, qNo, sendNo, noChange, "NO: otherwise, send DONT"},
	{qYes, anyPolicy, recvYes, qYes, sendNothing, noChange, "YES: ignore"},
	{qWantNo, anyPolicy, recvYes, qNo, sendNothing, noChange, "WANTNO EMPTY: error, DONT answered by WILL; him=NO"},
	{qWantNo | qOpposite, anyPolicy, recvYes, qYes, sendNothing, turnedOn, "WANTNO OPPOSITE: error, DONT answered by WILL; him=YES, himq=EMPTY"},
	{qWantYes, anyPolicy, recvYes, qYes, sendNothing, turnedOn, "WANTYES EMPTY: him=YES"},
	{qWantYes | qOpposite, anyPolicy, recvYes, qWantNo, sendNo, noChange, "WANTYES OPPOSITE: him=WANTNO, himq=EMPTY, send DONT"},

	// Upon receipt of WONT, we choose based upon him and himq:
	{qNo, anyPolicy, recvNo, qNo, sendNothing, noChange, "NO: ignore"},
	{qYes, anyPolicy, recvNo, qNo, sendNo, turnedOff, "YES: him=NO, send DONT"},
	{qWantNo, anyPolicy, recvNo, qNo, sendNothing, noChange, "WANTNO EMPTY: him=NO"},
	{qWantNo | qOpposite, anyPolicy, recvNo, qWantYes, sendYes, noChange, "WANTNO OPPOSITE: him=WANTYES, himq=NONE, send DO"},
	{qWantYes, anyPolicy, recvNo, qNo, sendNothing, noChange, "WANTYES EMPTY: him=NO (the only refusal of our request)"},
	{qWantYes | qOpposite, anyPolicy, recvNo, qNo, sendNothing, noChange, "WANTYES OPPOSITE: him=NO, himq=NONE"},

	// If we decide to ask him to enable (Enable):
	{qNo, anyPolicy, enable, qWantYes, sendYes, noChange, "NO: him=WANTYES, send DO"},
	{qYes, anyPolicy, enable, qYes, sendNothing, noChange, "YES: error, already enabled"},
	{qWantNo, anyPolicy, enable, qWantNo | qOpposite, sendNothing, noChange, "WANTNO EMPTY: we queue requests, himq=OPPOSITE"},
	{qWantNo | qOpposite, anyPolicy, enable, qWantNo | qOpposite, sendNothing, noChange, "WANTNO OPPOSITE: error, already queued an enable request"},
	{qWantYes, anyPolicy, enable, qWantYes, sendNothing, noChange, "WANTYES EMPTY: error, already negotiating for enable"},
	{qWantYes | qOpposite, anyPolicy, enable, qWantYes, sendNothing, noChange, "WANTYES OPPOSITE: himq=EMPTY"},

	// If we decide to ask him to disable (Disable):
	{qNo, anyPolicy, disable, qNo, sendNothing, noChange, "NO: error, already disabled"},
	{qYes, anyPolicy, disable, qWantNo, sendNo, noChange, "YES: him=WANTNO, send DONT"},
	{qWantNo, anyPolicy, disable, qWantNo, sendNothing, noChange, "WANTNO EMPTY: error, already negotiating for disable"},
	{qWantNo | qOpposite, anyPolicy, disable, qWantNo, sendNothing, noChange, "WANTNO OPPOSITE: himq=EMPTY"},
	{qWantYes, anyPolicy, disable, qWantYes | qOpposite, sendNothing, noChange, "WANTYES EMPTY: we queue requests, himq=OPPOSITE"},
	{qWantYes | qOpposite, anyPolicy, disable, qWantYes | qOpposite, sendNothing, noChange, "WANTYES OPPOSITE: error, already queued a disable request"},
}

// TestQMethodTableComplete: the table has one row for each of the six
// states and four inputs, and the policy decides only a WILL (DO) in NO,
// where it has a row for each answer.
func TestQMethodTableComplete(t *testing.T) {
	states := []qState{qNo, qYes, qWantNo, qWantNo | qOpposite, qWantYes, qWantYes | qOpposite}
	seen := map[string]int{}
	for _, r := range rfc1143 {
		seen[fmt.Sprint(stateName(r.from), r.in, r.policy)]++
	}
	for _, s := range states {
		for in := recvYes; in <= disable; in++ {
			policies := []qPolicy{anyPolicy}
			if s == qNo && in == recvYes {
				policies = []qPolicy{accepting, refusing}
			}
			for _, p := range policies {
				if k := fmt.Sprint(stateName(s), in, p); seen[k] != 1 {
					t.Errorf("%s × %v (policy %d): %d rows, want 1", stateName(s), in, p, seen[k])
				}
			}
		}
	}
	if want := len(states)*4 + 1; len(rfc1143) != want {
		t.Errorf("%d rows, want %d", len(rfc1143), want)
	}
}

// TestQMethodTable runs every row of rfc1143 on both sides of an option,
// under each policy the row allows, with the other side of the same option
// off and on: the reply bytes, the new state, the reported change and the
// policy afterwards are the table's, and the other side is untouched.
func TestQMethodTable(t *testing.T) {
	const opt = Option(77)
	sides := []struct {
		side, other     Side
		peerYes, peerNo Command
		ourYes, ourNo   Command
	}{
		{side: Remote, other: Local, peerYes: WILL, peerNo: WONT, ourYes: DO, ourNo: DONT},
		{side: Local, other: Remote, peerYes: DO, peerNo: DONT, ourYes: WILL, ourNo: WONT},
	}
	for _, s := range sides {
		for _, r := range rfc1143 {
			policies := []bool{true, false}
			switch r.policy {
			case accepting:
				policies = []bool{true}
			case refusing:
				policies = []bool{false}
			}
			input := r.in.String()
			switch r.in {
			case recvYes:
				input = s.peerYes.String()
			case recvNo:
				input = s.peerNo.String()
			}
			name := fmt.Sprintf("%v/%s in %s", s.side, input, stateName(r.from))
			if r.policy != anyPolicy {
				name += map[qPolicy]string{accepting: " accepting", refusing: " refusing"}[r.policy]
			}
			t.Run(name, func(t *testing.T) {
				for _, accept := range policies {
					for _, other := range []qState{qNo, qYes} {
						var o Options
						if !o.set(s.other, opt, other) || !o.set(s.side, opt, r.from) {
							t.Fatal("no slot")
						}
						o.Accept(s.side, opt, accept)
						var out []byte
						var ch *Change
						switch r.in {
						case recvYes:
							out, ch = o.Receive(nil, s.peerYes, opt)
						case recvNo:
							out, ch = o.Receive(nil, s.peerNo, opt)
						case enable:
							out = o.Enable(nil, s.side, opt)
						case disable:
							out = o.Disable(nil, s.side, opt)
						}
						cell := fmt.Sprintf("accept=%v, other side %s (RFC 1143 §7, %s)", accept, stateName(other), r.rule)

						var want []byte
						switch r.send {
						case sendYes:
							want = AppendNegotiation(nil, s.ourYes, opt)
						case sendNo:
							want = AppendNegotiation(nil, s.ourNo, opt)
						}
						if !bytes.Equal(out, want) {
							t.Errorf("%s: sent % x, want % x", cell, out, want)
						}
						if got := o.get(s.side, opt); got != r.to {
							t.Errorf("%s: state %s, want %s", cell, stateName(got), stateName(r.to))
						}
						if got := o.get(s.other, opt); got != other {
							t.Errorf("%s: other side moved to %s", cell, stateName(got))
						}
						var wantCh *Change
						switch r.change {
						case turnedOn:
							wantCh = &Change{Side: s.side, Option: opt, Enabled: true}
						case turnedOff:
							wantCh = &Change{Side: s.side, Option: opt, Enabled: false}
						}
						if fmt.Sprint(ch) != fmt.Sprint(wantCh) {
							t.Errorf("%s: change %+v, want %+v", cell, ch, wantCh)
						}
						if o.Enabled(s.side, opt) != (r.to == qYes) {
							t.Errorf("%s: Enabled = %v in %s", cell, o.Enabled(s.side, opt), stateName(r.to))
						}
						if pending := r.to&qStateMask >= qWantNo; o.Pending(s.side, opt) != pending {
							t.Errorf("%s: Pending = %v in %s", cell, o.Pending(s.side, opt), stateName(r.to))
						}
						wantAccept := accept
						switch r.in {
						case enable:
							wantAccept = true // Enable also agrees to the peer asking
						case disable:
							wantAccept = false
						}
						if o.accepts(s.side, opt) != wantAccept {
							t.Errorf("%s: accepts = %v, want %v", cell, o.accepts(s.side, opt), wantAccept)
						}
						if r.to == qNo && other == qNo && o.find(opt) != nil {
							t.Errorf("%s: both sides NO, yet the option holds a slot", cell)
						}
					}
				}
			})
		}
	}
}

func TestQMethodAnswers(t *testing.T) {
	var o Options
	o.Accept(Remote, VMwareExt, true)
	// Unsolicited WILL 232 → DO 232, enabled.
	out, ch := o.Receive(nil, WILL, VMwareExt)
	if hex.EncodeToString(out) != "fffde8" || ch == nil || !ch.Enabled {
		t.Fatalf("WILL 232: % x %+v", out, ch)
	}
	// Repeated WILL: no answer (no loop).
	if out, ch = o.Receive(nil, WILL, VMwareExt); len(out) != 0 || ch != nil {
		t.Fatalf("repeat WILL answered % x", out)
	}
	// WILL AUTHENTICATION, not accepted → DONT.
	if out, _ = o.Receive(nil, WILL, Authentication); hex.EncodeToString(out) != "fffe25" {
		t.Fatalf("WILL 37: % x", out)
	}
	// DO of an unknown option → WONT.
	if out, _ = o.Receive(nil, DO, 99); hex.EncodeToString(out) != "fffc63" {
		t.Fatalf("DO 99: % x", out)
	}
	// WONT 232 → DONT 232 and disabled.
	out, ch = o.Receive(nil, WONT, VMwareExt)
	if hex.EncodeToString(out) != "fffee8" || ch == nil || ch.Enabled {
		t.Fatalf("WONT 232: % x %+v", out, ch)
	}
	// Renegotiation: WILL again → DO.
	if out, _ = o.Receive(nil, WILL, VMwareExt); hex.EncodeToString(out) != "fffde8" {
		t.Fatalf("WILL 232 again: % x", out)
	}
	// We ask DO BINARY; the peer agrees with WILL: no further answer.
	out = o.Enable(nil, Remote, Binary)
	if hex.EncodeToString(out) != "fffd00" {
		t.Fatalf("Enable: % x", out)
	}
	out, ch = o.Receive(nil, WILL, Binary)
	if len(out) != 0 || ch == nil || !o.Enabled(Remote, Binary) {
		t.Fatalf("WILL BINARY after DO: % x %+v", out, ch)
	}
	// We offer WILL ECHO; the peer refuses with DONT: no answer, off.
	o.Enable(nil, Local, Echo)
	if out, _ = o.Receive(nil, DONT, Echo); len(out) != 0 || o.Enabled(Local, Echo) {
		t.Fatalf("DONT ECHO: % x", out)
	}
}

// TestQMethodNeverLoops: two ends with random policies make Enable and
// Disable requests at random moments (both at once, and while the other's
// answers are still in flight); messages are delivered one at a time, in
// order in each direction, in a random interleaving of the two. Every
// exchange goes quiet having sent at most two messages per request (RFC
// 1143: a request, immediate or queued, is answered once, and an answer
// is never answered), never reaches the table's error cells, leaves
// nothing pending and nothing queued on either end; the two ends agree on
// every option, and each end's last request was honoured as far as the
// other's policy allows.
func TestQMethodNeverLoops(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const opts = 3 // few options, so that requests collide
	for iter := range 20000 {
		var ends [2]Options
		var accepted [2][2][opts]bool // [end][side][opt], as the run starts
		var last [2][2][opts]string   // [end][side][opt]: "Enable", "Disable" or "" (none)
		for i := range ends {
			for opt := range Option(opts) {
				for _, side := range []Side{Local, Remote} {
					accepted[i][side][opt] = rng.IntN(2) == 0
					ends[i].Accept(side, opt, accepted[i][side][opt])
				}
			}
		}
		var wire [2][]byte // wire[i]: messages from end i to the other, in flight
		var trace []string
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("iter %d: %s\n%s", iter, fmt.Sprintf(format, args...), strings.Join(trace, "\n"))
		}
		budget := 1 + rng.IntN(10)
		requests, messages := 0, 0
		for {
			type move struct {
				end     int
				request bool
			}
			var moves []move
			for i := range 2 {
				if budget > 0 {
					moves = append(moves, move{i, true})
				}
				if len(wire[i]) > 0 {
					moves = append(moves, move{i, false})
				}
			}
			if len(moves) == 0 {
				break
			}
			m := moves[rng.IntN(len(moves))]
			if m.request {
				budget--
				requests++
				opt, side := Option(rng.IntN(opts)), Side(rng.IntN(2))
				n := len(wire[m.end])
				if rng.IntN(2) == 0 {
					last[m.end][side][opt] = "Enable"
					wire[m.end] = ends[m.end].Enable(wire[m.end], side, opt)
					trace = append(trace, fmt.Sprintf("%c: Enable %v %d → % x", 'a'+m.end, side, opt, wire[m.end][n:]))
				} else {
					last[m.end][side][opt] = "Disable"
					wire[m.end] = ends[m.end].Disable(wire[m.end], side, opt)
					trace = append(trace, fmt.Sprintf("%c: Disable %v %d → % x", 'a'+m.end, side, opt, wire[m.end][n:]))
				}
				messages += (len(wire[m.end]) - n) / 3
			} else {
				from, to := m.end, 1-m.end
				verb, opt := Command(wire[from][1]), Option(wire[from][2])
				wire[from] = wire[from][3:]
				// RFC 1143 §7: "DONT will never be answered by WILL over
				// a reliable connection between TELNETs compliant with
				// this RFC". Its error cells must stay unreachable here.
				side := map[Command]Side{WILL: Remote, WONT: Remote, DO: Local, DONT: Local}[verb]
				if (verb == WILL || verb == DO) && ends[to].get(side, opt)&qStateMask == qWantNo {
					fail("%c: %v %d while in %s: a request to disable answered by a yes", 'a'+to, verb, opt, stateName(ends[to].get(side, opt)))
				}
				n := len(wire[to])
				wire[to], _ = ends[to].Receive(wire[to], verb, opt)
				messages += (len(wire[to]) - n) / 3
				trace = append(trace, fmt.Sprintf("%c: got %v %d → % x", 'a'+to, verb, opt, wire[to][n:]))
			}
			if messages > 2*requests {
				fail("%d messages for %d requests: negotiation loops", messages, requests)
			}
			for i := range ends {
				for _, e := range ends[i].ent {
					for side, st := range e.st {
						if e.used && st&qOpposite != 0 && st&qStateMask != qWantNo && st&qStateMask != qWantYes {
							fail("%c: %v %d in %s: a queue bit outside WANTNO/WANTYES", 'a'+i, Side(side), e.opt, stateName(st))
						}
					}
				}
			}
		}
		for opt := range Option(opts) {
			for i := range ends {
				for _, side := range []Side{Local, Remote} {
					if st := ends[i].get(side, opt); st != qNo && st != qYes {
						fail("quiet, yet %c: %v %d is %s", 'a'+i, side, opt, stateName(st))
					}
				}
			}
			if ends[0].Enabled(Local, opt) != ends[1].Enabled(Remote, opt) || ends[0].Enabled(Remote, opt) != ends[1].Enabled(Local, opt) {
				fail("option %d: a has local %v remote %v, b has local %v remote %v", opt,
					ends[0].Enabled(Local, opt), ends[0].Enabled(Remote, opt), ends[1].Enabled(Local, opt), ends[1].Enabled(Remote, opt))
			}
			// Every end got its last wish where the other's policy
			// allows: a disable always wins; an enable wins when the
			// other end asked for it too, or accepts it.
			for i := range ends {
				j := 1 - i
				mine, theirs := last[i][Local][opt], last[j][Remote][opt]
				var want bool
				switch {
				case mine == "Disable" || theirs == "Disable":
				case mine == "Enable" && theirs == "Enable":
					want = true
				case mine == "Enable":
					want = accepted[j][Remote][opt]
				case theirs == "Enable":
					want = accepted[i][Local][opt]
				}
				if got := ends[i].Enabled(Local, opt); got != want {
					fail("%c performs option %d: %v, want %v (its last request %q, the other's %q)", 'a'+i, opt, got, want, mine, theirs)
				}
			}
		}
	}
}

// TestOptionsBounded: a peer offering every option takes no state for the
// refused ones; past the slot bound even accepted options are refused, so
// memory stays bounded and negotiation still never loops.
func TestOptionsBounded(t *testing.T) {
	var o Options
	for opt := range 256 {
		out, ch := o.Receive(nil, WILL, Option(opt))
		if ch != nil || !bytes.Equal(out, []byte{0xff, byte(DONT), byte(opt)}) {
			t.Fatalf("WILL %d: % x", opt, out)
		}
	}
	for opt := range 20 {
		o.Accept(Remote, Option(opt), true)
	}
	agreed := 0
	for opt := range 20 {
		out, _ := o.Receive(nil, WILL, Option(opt))
		switch {
		case bytes.Equal(out, []byte{0xff, byte(DO), byte(opt)}):
			agreed++
		case bytes.Equal(out, []byte{0xff, byte(DONT), byte(opt)}):
		default:
			t.Fatalf("WILL %d: % x", opt, out)
		}
	}
	if agreed != maxTracked {
		t.Fatalf("agreed to %d options, want %d", agreed, maxTracked)
	}
	// With every slot taken, Enable asks nothing and the option stays off.
	if out := o.Enable(nil, Local, 30); len(out) != 0 || o.Enabled(Local, 30) || o.Pending(Local, 30) {
		t.Fatalf("Enable with every slot taken: % x, enabled %v, pending %v", out, o.Enabled(Local, 30), o.Pending(Local, 30))
	}
	// Switching one off frees its slot for another.
	o.Receive(nil, WONT, 0)
	if out, _ := o.Receive(nil, WILL, 19); !bytes.Equal(out, []byte{0xff, byte(DO), 19}) {
		t.Fatalf("after a slot was freed: % x", out)
	}
}
