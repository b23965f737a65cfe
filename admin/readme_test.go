package admin

import (
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestREADMEMetrics checks the README's metrics table against the
// collector: every metric it describes has a row, and every name in the
// table is one it describes. A cell may shorten a second name with "…"
// standing for a prefix of the name before it ("`…_max`").
func TestREADMEMetrics(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan *prometheus.Desc, 100)
	NewCollector(Config{}).Describe(ch)
	close(ch)
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	known := map[string]bool{}
	for d := range ch {
		m := fq.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no name in %s", d)
		}
		known[m[1]] = true
	}

	documented := map[string]bool{}
	inTable := false
	name := regexp.MustCompile("`([^`]+)`")
	for i, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| Metric | Type |") {
			inTable = true
			continue
		}
		if !inTable || strings.HasPrefix(line, "|---") {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			if len(documented) > 0 {
				break
			}
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(line, "|"), "|")
		prev := ""
		for _, m := range name.FindAllStringSubmatch(first, -1) {
			n := m[1]
			if suffix, ok := strings.CutPrefix(n, "…"); ok {
				n = ""
				for j := len(prev); j > 0; j-- {
					if (j == len(prev) || prev[j] == '_') && known[prev[:j]+suffix] {
						n = prev[:j] + suffix
						break
					}
				}
				if n == "" {
					t.Errorf("README.md:%d: %s after %s names no metric", i+1, m[1], prev)
					continue
				}
			}
			if !known[n] {
				t.Errorf("README.md:%d: %s is not a metric the bridge exports", i+1, n)
			}
			documented[n] = true
			prev = n
		}
	}
	if len(documented) == 0 {
		t.Fatal("README.md has no metrics table (| Metric | Type | Labels |)")
	}
	for _, n := range slices.Sorted(maps.Keys(known)) {
		if !documented[n] {
			t.Errorf("the bridge exports %s, but README.md's metrics table has no row for it", n)
		}
	}
}
