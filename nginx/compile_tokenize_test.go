package nginx

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"
)

// directive is one node of a parsed configuration file: its name, its
// arguments (unquoted) and, for a block, its children.
type directive struct {
	name     string
	args     []string
	block    bool
	children []*directive
}

// parseConf is a small nginx configuration tokenizer and parser, written
// from ngx_conf_read_token: words end at whitespace, ";", "{" or "}"; "#"
// at the start of a word starts a comment to the end of the line; a quoted
// string ("..." or '...') is one word in which \" \' \\ \t \r \n are
// escapes, and it must be followed by whitespace, ";" or "{". It is the
// independent reading the fuzz test compares compiled files with.
func parseConf(src string) ([]*directive, error) {
	type frame struct{ list *[]*directive }
	var root []*directive
	stack := []frame{{&root}}
	var words []string
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case c == ';' || c == '{':
			if len(words) == 0 {
				return nil, fmt.Errorf("offset %d: unexpected %q", i, c)
			}
			d := &directive{name: words[0], args: words[1:], block: c == '{'}
			top := stack[len(stack)-1]
			*top.list = append(*top.list, d)
			if d.block {
				stack = append(stack, frame{&d.children})
			}
			words = nil
			i++
		case c == '}':
			if len(words) != 0 || len(stack) == 1 {
				return nil, fmt.Errorf("offset %d: unexpected \"}\"", i)
			}
			stack = stack[:len(stack)-1]
			i++
		case c == '"' || c == '\'':
			q := c
			i++
			var b strings.Builder
			closed := false
			for i < len(src) {
				ch := src[i]
				if ch == '\\' && i+1 < len(src) {
					switch n := src[i+1]; n {
					case '"', '\'', '\\':
						b.WriteByte(n)
					case 't':
						b.WriteByte('\t')
					case 'r':
						b.WriteByte('\r')
					case 'n':
						b.WriteByte('\n')
					default:
						b.WriteByte('\\')
						b.WriteByte(n)
					}
					i += 2
					continue
				}
				i++
				if ch == q {
					closed = true
					break
				}
				b.WriteByte(ch)
			}
			if !closed {
				return nil, fmt.Errorf("unterminated quoted string")
			}
			if i < len(src) && !strings.ContainsRune(" \t\r\n;{", rune(src[i])) {
				return nil, fmt.Errorf("offset %d: unexpected %q after a quoted string", i, src[i])
			}
			words = append(words, b.String())
		default:
			start := i
			for i < len(src) && !strings.ContainsRune(" \t\r\n;{}\"'", rune(src[i])) {
				i++
			}
			if i < len(src) && (src[i] == '"' || src[i] == '\'') {
				return nil, fmt.Errorf("offset %d: quote inside a word", i)
			}
			words = append(words, src[start:i])
		}
	}
	if len(words) != 0 || len(stack) != 1 {
		return nil, fmt.Errorf("unexpected end of file")
	}
	return root, nil
}

// shape is the structure of a directive tree: names, argument counts and
// nesting, but not the argument values.
func shape(ds []*directive) string {
	var b strings.Builder
	var walk func([]*directive)
	walk = func(ds []*directive) {
		for _, d := range ds {
			fmt.Fprintf(&b, "%s/%d", d.name, len(d.args))
			if d.block {
				b.WriteByte('{')
				walk(d.children)
				b.WriteByte('}')
			}
			b.WriteByte(';')
		}
	}
	walk(ds)
	return b.String()
}

// bundleShape parses every configuration file of b and returns their
// shapes, sorted, each prefixed with its directory: comparable between two
// bundles whose resource names differ.
func bundleShape(t testing.TB, b *Bundle) []string {
	t.Helper()
	var out []string
	for _, f := range b.Files {
		if !isConf(f.Path) {
			continue
		}
		ds, err := parseConf(string(f.Data))
		if err != nil {
			t.Fatalf("%s does not parse: %v\n%s", f.Path, err, f.Data)
		}
		out = append(out, path.Dir(f.Path)+":"+shape(ds))
	}
	slices.Sort(out)
	return out
}

func isConf(p string) bool {
	return strings.HasSuffix(p, ".conf") || strings.HasSuffix(p, ".types")
}

// forbidden are directive names no generated file may hold (DESIGN.md,
// "Safety rules that never bend").
func forbiddenDirective(name string) bool {
	n := strings.ToLower(name)
	return n == "load_module" || n == "ssl_engine" || strings.Contains(n, "_by_lua") ||
		strings.HasPrefix(n, "perl") || strings.HasPrefix(n, "lua") || n == "js_import" || n == "js_include"
}

// assertSafe fails the test when a file of b holds a forbidden directive or
// an include of anything but a file of the bundle (relative, or absolute
// under includeRoot).
func assertSafe(t testing.TB, b *Bundle, includeRoot string) {
	t.Helper()
	for _, f := range b.Files {
		if !isConf(f.Path) {
			continue
		}
		ds, err := parseConf(string(f.Data))
		if err != nil {
			t.Fatalf("%s does not parse: %v", f.Path, err)
		}
		var walk func([]*directive)
		walk = func(ds []*directive) {
			for _, d := range ds {
				if forbiddenDirective(d.name) {
					t.Errorf("%s holds forbidden directive %s", f.Path, d.name)
				}
				if d.name == "include" {
					if len(d.args) != 1 {
						t.Errorf("%s: include with %d arguments", f.Path, len(d.args))
						continue
					}
					p := d.args[0]
					if includeRoot != "" {
						rel, ok := strings.CutPrefix(p, includeRoot+"/")
						if !ok {
							t.Errorf("%s includes %q, outside %s", f.Path, p, includeRoot)
							continue
						}
						p = rel
					}
					if b.File(p) == nil {
						t.Errorf("%s includes %q, which is not a file of the bundle", f.Path, d.args[0])
					}
				}
				walk(d.children)
			}
		}
		walk(ds)
	}
}

func TestParseConf(t *testing.T) {
	tests := []struct {
		name, src, shape string
		wantErr          bool
	}{
		{name: "simple", src: "a b c;\nx { y; }\n", shape: "a/2;x/0{y/0;};"},
		{name: "comment", src: "# c ; {\na \"b;{}#\" 'c\\'';", shape: "a/2;"},
		{name: "hash inside word", src: "a b#c;", shape: "a/1;"},
		{name: "unclosed", src: "a {", wantErr: true},
		{name: "stray close", src: "}", wantErr: true},
		{name: "junk after quote", src: `a "b"c;`, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds, err := parseConf(tc.src)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parsed %q", tc.src)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := shape(ds); got != tc.shape {
				t.Errorf("shape %q, want %q", got, tc.shape)
			}
		})
	}
}
