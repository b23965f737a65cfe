package configs

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/BurntSushi/toml"
)

// The README's Configuration section is the operators' reference: every
// key the parser accepts must have a row there, and every row must name a
// key the parser accepts. The tests below read ../README.md.

const readmePath = "../README.md"

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// configKeys lists every key path the parser accepts ("vspc.listen",
// "route.device", "cluster.lease_ttl"), walking Config's toml tags the
// way decoder.table does. A table of tables ([[route]]) is named without
// brackets.
func configKeys(t reflect.Type, prefix string, out map[string]reflect.Type) {
	for i := range t.NumField() {
		sf := t.Field(i)
		name, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
		if !sf.IsExported() || name == "" || name == "-" {
			continue
		}
		ft := sf.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		key := prefix + name
		switch {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[Duration]():
			configKeys(ft, key+".", out)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && prefix == "":
			// [[route]], [[user]], [[alert]]: a table of their own. A
			// nested list of tables (user.access) is one key, its
			// fields described in its row.
			configKeys(ft.Elem(), key+".", out)
		default:
			out[key] = sf.Type
		}
	}
}

// readmeRow is one row of a "| Key | Default | Meaning |" table.
type readmeRow struct {
	line     int
	keys     []string // full key paths
	defaults string   // the Default cell
}

var (
	tableHeading = regexp.MustCompile("^### `\\[\\[?([a-z_]+)\\]?\\]`")
	backticked   = regexp.MustCompile("`([^`]*)`")
)

// readmeConfigRows reads the config reference tables of the README: the
// rows of each "| Key | Default | Meaning |" table under a "### `[table]`"
// or "### `[[table]]`" heading.
func readmeConfigRows(t *testing.T, text string) []readmeRow {
	t.Helper()
	var rows []readmeRow
	section, inTable := "", false
	for i, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "#") {
			section, inTable = "", false
			if m := tableHeading.FindStringSubmatch(line); m != nil {
				section = m[1]
			}
			continue
		}
		if section == "" {
			continue
		}
		if strings.HasPrefix(line, "| Key | Default | Meaning |") {
			inTable = true
			continue
		}
		if !inTable || !strings.HasPrefix(line, "| `") {
			if !strings.HasPrefix(line, "|") {
				inTable = false
			}
			continue
		}
		cells := splitRow(line)
		if len(cells) != 3 {
			t.Errorf("README.md:%d: a config row needs 3 cells, has %d", i+1, len(cells))
			continue
		}
		r := readmeRow{line: i + 1, defaults: cells[1]}
		for _, m := range backticked.FindAllStringSubmatch(cells[0], -1) {
			r.keys = append(r.keys, section+"."+m[1])
		}
		rows = append(rows, r)
	}
	return rows
}

// splitRow splits a Markdown table row into its cells, keeping "\|"
// inside a cell.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	line = strings.TrimSuffix(line, "|")
	var cells []string
	var cur strings.Builder
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

// TestREADMEConfigKeys checks the README's config reference against the
// parser: each accepted key has exactly one row, each row names accepted
// keys.
func TestREADMEConfigKeys(t *testing.T) {
	want := map[string]reflect.Type{}
	configKeys(reflect.TypeFor[Config](), "", want)
	rows := readmeConfigRows(t, readme(t))
	if len(rows) < 50 {
		t.Fatalf("found %d config rows in README.md; has the Configuration section's layout changed?", len(rows))
	}
	seen := map[string]int{}
	for _, r := range rows {
		for _, k := range r.keys {
			if _, ok := want[k]; !ok {
				t.Errorf("README.md:%d documents %s, which the parser rejects", r.line, k)
			}
			if l, dup := seen[k]; dup {
				t.Errorf("README.md:%d documents %s again (first at line %d)", r.line, k, l)
			}
			seen[k] = r.line
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if _, ok := seen[k]; !ok {
			t.Errorf("the parser accepts %s, but README.md's Configuration section has no row for it", k)
		}
	}
}

var leadingValues = regexp.MustCompile("^`[^`]*`(, `[^`]*`)*")

// TestREADMEConfigDefaults checks the Default column against the
// defaults Parse fills in, for every row whose Default cell starts with
// one literal value per key ("`10s`", "`5`, `1m`") or one for all its
// keys ("`\"\"`"). Cells that describe the default in words
// ("required", "`lease_ttl` + 2s", "`link_listen`") are skipped, and so
// are the rows of [[route]], [[user]] and [[alert]], whose defaults
// validation fills in per table.
func TestREADMEConfigDefaults(t *testing.T) {
	def := defaults()
	def.Cluster = new(clusterDefaults())
	root := reflect.ValueOf(&def).Elem()
	checked := 0
	text := readme(t)
	keys := map[string]reflect.Type{}
	configKeys(reflect.TypeFor[Config](), "", keys)
	for _, r := range readmeConfigRows(t, text) {
		lit := leadingValues.FindString(r.defaults)
		if lit == "" {
			continue
		}
		rest := strings.TrimSpace(r.defaults[len(lit):])
		if rest != "" && !strings.HasPrefix(rest, "(") && !strings.HasPrefix(rest, ".") {
			continue // "`lease_ttl` + 2s": an expression, not a value
		}
		if sec, _, _ := strings.Cut(r.keys[0], "."); strings.Contains(text, "### `[["+sec+"]]`") {
			continue
		}
		vals := backticked.FindAllStringSubmatch(lit, -1)
		if len(vals) == 1 {
			for len(vals) < len(r.keys) {
				vals = append(vals, vals[0])
			}
		}
		if len(vals) != len(r.keys) {
			t.Errorf("README.md:%d: %d keys but %d default values", r.line, len(r.keys), len(vals))
			continue
		}
		for i, k := range r.keys {
			sec, _, _ := strings.Cut(k, ".")
			if _, isKey := keys[sec+"."+vals[i][1]]; isKey {
				continue // "`link_listen`": another key's value
			}
			got, ok := defaultOf(root, k)
			if !ok {
				continue // TestREADMEConfigKeys reports it
			}
			doc, err := decodeDocValue(k, vals[i][1], got.Type())
			if err != nil {
				t.Errorf("README.md:%d: %s: default %q: %v", r.line, k, vals[i][1], err)
				continue
			}
			if !sameValue(doc, got) {
				t.Errorf("README.md:%d: %s: README says default %s, the parser's default is %v", r.line, k, vals[i][1], got.Interface())
			}
			checked++
		}
	}
	if checked < 60 {
		t.Errorf("checked only %d defaults; has the Default column's form changed?", checked)
	}
}

// defaultOf finds the default value of key path k ("remote.scrollback";
// for a table of tables the zero value of its row type).
func defaultOf(v reflect.Value, k string) (reflect.Value, bool) {
	for part := range strings.SplitSeq(k, ".") {
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		if v.Kind() == reflect.Slice {
			v = reflect.New(v.Type().Elem()).Elem()
		}
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		f, ok := field(v, part)
		if !ok {
			return reflect.Value{}, false
		}
		v = f
	}
	return v, true
}

// decodeDocValue decodes a README default ("10s", "\"text\"", "[]",
// "1MiB", "20000") with the parser's own decoder into a value of type typ.
func decodeDocValue(key, lit string, typ reflect.Type) (reflect.Value, error) {
	var raw map[string]any
	if _, err := toml.Decode("v = "+lit, &raw); err != nil {
		// A bare word or duration ("info", "10s"): the README drops the
		// quotes of some strings.
		if _, err := toml.Decode(fmt.Sprintf("v = %q", lit), &raw); err != nil {
			return reflect.Value{}, err
		}
	}
	d := &decoder{set: map[string]bool{}, bad: map[string]bool{}}
	out := reflect.New(typ).Elem()
	d.value(key, raw["v"], out)
	if len(d.errs) > 0 {
		return reflect.Value{}, d.errs[0].err
	}
	return out, nil
}

func sameValue(a, b reflect.Value) bool {
	if a.Kind() == reflect.Slice && a.Len() == 0 && b.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// TestREADMELinks checks that every internal link of README.md ("#anchor")
// names a heading, and that every relative link names a file in the
// repository.
func TestREADMELinks(t *testing.T) {
	text := readme(t)
	anchors := map[string]bool{}
	inCode := false
	lines := strings.Split(text, "\n")
	for _, line := range lines {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
			continue
		}
		if inCode || !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		a := githubAnchor(h)
		for n := 1; anchors[a]; n++ { // GitHub numbers repeated headings
			a = fmt.Sprintf("%s-%d", githubAnchor(h), n)
		}
		anchors[a] = true
	}
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	links := 0
	inCode = false
	for i, line := range lines {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
			continue
		}
		if inCode {
			continue
		}
		for _, m := range link.FindAllStringSubmatch(line, -1) {
			dst := m[1]
			switch {
			case strings.HasPrefix(dst, "#"):
				links++
				if !anchors[dst[1:]] {
					t.Errorf("README.md:%d: link %s names no heading", i+1, dst)
				}
			case strings.Contains(dst, "://") || strings.HasPrefix(dst, "mailto:"):
			default:
				links++
				p, _, _ := strings.Cut(dst, "#")
				if _, err := os.Stat(filepath.Join("..", filepath.FromSlash(p))); err != nil {
					t.Errorf("README.md:%d: link %s: %v", i+1, dst, err)
				}
			}
		}
	}
	if links == 0 {
		t.Error("README.md has no internal or relative links; has the link form changed?")
	}
}

// githubAnchor is the anchor GitHub gives a heading: lower case, spaces
// to hyphens, punctuation other than hyphens and underscores dropped.
func githubAnchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestREADMEConfigErrors checks the README's check-config example: each
// error line it shows is one Parse reports for testdata/broken.toml
// (testdata/broken.golden), and the count it gives is the golden's.
func TestREADMEConfigErrors(t *testing.T) {
	golden, err := os.ReadFile("testdata/broken.golden")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	lines := strings.Split(strings.TrimSpace(string(golden)), "\n")
	for _, l := range lines {
		want[strings.Replace(l, "broken.toml:", "configs/testdata/broken.toml:", 1)] = true
	}
	shown := 0
	for i, l := range strings.Split(readme(t), "\n") {
		if !strings.HasPrefix(l, "configs: configs/testdata/broken.toml:") {
			continue
		}
		shown++
		if !want[l] {
			t.Errorf("README.md:%d: check-config does not print %q", i+1, l)
		}
	}
	if shown == 0 {
		t.Error("README.md shows no check-config errors for configs/testdata/broken.toml")
	}
	if n := fmt.Sprintf("(%d problems in all)", len(lines)); !strings.Contains(readme(t), n) {
		t.Errorf("README.md's check-config example should say %q", n)
	}
}

// TestREADMEFuzzTargets checks that every fuzz target make test runs
// (the Makefile's FUZZ_TARGETS) has a row in the README's fuzzing table.
func TestREADMEFuzzTargets(t *testing.T) {
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	text := readme(t)
	target := regexp.MustCompile(`(?m)^\t\./([a-z0-9/]+):(Fuzz[A-Za-z0-9]+)`)
	found := target.FindAllStringSubmatch(string(mk), -1)
	if len(found) < 10 {
		t.Fatalf("found %d fuzz targets in the Makefile; has FUZZ_TARGETS' form changed?", len(found))
	}
	for _, m := range found {
		if row := "| `" + m[1] + "` `" + m[2] + "` |"; !strings.Contains(text, row) {
			t.Errorf("README.md's fuzzing table has no row %q", row)
		}
	}
}

// TestREADMEPackages checks the README's package table against the
// repository: every directory with Go files (what go list ./... lists)
// has a row, and every row names such a directory.
func TestREADMEPackages(t *testing.T) {
	text := readme(t)
	_, table, ok := strings.Cut(text, "| Package | What it is |")
	if !ok {
		t.Fatal("README.md has no package table (| Package | What it is |)")
	}
	table, _, _ = strings.Cut(table, "\n\n")
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(table, -1) {
		rows[m[1]] = true
	}
	pkgs := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != ".." && (strings.HasPrefix(n, ".") || n == "testdata" || n == "bin" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") {
			rel, err := filepath.Rel("..", filepath.Dir(path))
			if err != nil {
				return err
			}
			pkgs[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range slices.Sorted(maps.Keys(pkgs)) {
		if !rows[p] {
			t.Errorf("package %s has no row in README.md's package table", p)
		}
	}
	for _, r := range slices.Sorted(maps.Keys(rows)) {
		if !pkgs[r] {
			t.Errorf("README.md's package table has a row for %s, which holds no Go package", r)
		}
	}
}
