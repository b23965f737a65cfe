package configs

import (
	"reflect"
	"testing"
)

func TestScanKeyLines(t *testing.T) {
	src := `# comment [not.a.table]
top = 1
[vspc]
listen = "x"   # trailing comment
"quoted key" = 'lit'
dotted.inner = 2
ml = """
fake = 1
[[route]]
"""
lit = '''
[fake]'''
arr = [
  "a", # one
  [1, 2],
  { k = "v",
    j = 3 },
]

[[route]]
name = "r0"

[route.sub]
x = 1

[[route]]
name = "r1"
inline = { a = 1, b = { c = 2 } }
`
	want := keyLines{
		"top":                 2,
		"vspc":                3,
		"vspc.listen":         4,
		`vspc."quoted key"`:   5,
		"vspc.dotted":         6,
		"vspc.dotted.inner":   6,
		"vspc.ml":             7,
		"vspc.lit":            11,
		"vspc.arr":            13,
		"vspc.arr[0]":         14,
		"vspc.arr[1]":         15,
		"vspc.arr[1][0]":      15,
		"vspc.arr[1][1]":      15,
		"vspc.arr[2]":         16,
		"vspc.arr[2].k":       16,
		"vspc.arr[2].j":       17,
		"route[0]":            20,
		"route[0].name":       21,
		"route[0].sub":        23,
		"route[0].sub.x":      24,
		"route[1]":            26,
		"route[1].name":       27,
		"route[1].inline":     28,
		"route[1].inline.a":   28,
		"route[1].inline.b":   28,
		"route[1].inline.b.c": 28,
	}
	got := scanKeyLines(src)
	if !reflect.DeepEqual(got, want) {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: line %d, want %d", k, got[k], v)
			}
		}
		for k, v := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("unexpected key %s at line %d", k, v)
			}
		}
	}
	for _, tt := range []struct {
		key  string
		line int
	}{
		{"route[1].device", 26},  // absent key: its table
		{"route[0].sub.y", 23},   // absent key in a sub-table
		{"route[5].device", 0},   // no such element, no "route" table
		{"vspc.arr[9]", 13},      // absent element: the array
		{`vspc."quoted key"`, 5}, // quoted
		{"nope", 0},
	} {
		if got := got.find(tt.key); got != tt.line {
			t.Errorf("find(%q) = %d, want %d", tt.key, got, tt.line)
		}
	}
}

func TestParentKey(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"a.b", "a"}, {"a", ""}, {"route[1]", "route"}, {"route[1].x", "route[1]"},
		{`a."b.c"`, "a"}, {`"b.c"`, ""}, {`a."b\"c"`, "a"}, {"a[1][2]", "a[1]"},
	} {
		if got := parentKey(tt.in); got != tt.want {
			t.Errorf("parentKey(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
