package nginx

import (
	"fmt"
	"strings"

	"github.com/nxmesh/nxmesh/schema"
)

// emitter writes one file of directives. Directive names and fixed
// arguments are constants of this package; every user value arrives as a
// token from tok, which runs it through one function of quote.go and
// records the first failure, naming the resource and field.
type emitter struct {
	kind  schema.Kind
	name  string
	b     strings.Builder
	depth int
	err   error
}

// tok returns f(v), or "" after recording a *CompileError for field.
func (e *emitter) tok(field string, f func(string) (string, error), v string) string {
	t, err := f(v)
	if err != nil {
		e.fail(field, fmt.Errorf("%s %w", shortQuote(v), err))
		return `""`
	}
	return t
}

// num returns n in decimal, or records an error when outside [lo, hi].
func (e *emitter) num(field string, n, lo, hi int) string {
	t, err := integer(n, lo, hi)
	if err != nil {
		e.fail(field, err)
		return "0"
	}
	return t
}

func (e *emitter) fail(field string, err error) {
	if e.err == nil {
		e.err = &CompileError{Kind: e.kind, Name: e.name, Field: field, Err: err}
	}
}

func (e *emitter) indent() {
	for range e.depth {
		e.b.WriteString("    ")
	}
}

// line writes one simple directive.
func (e *emitter) line(name string, args ...string) {
	e.indent()
	e.b.WriteString(name)
	for _, a := range args {
		e.b.WriteByte(' ')
		e.b.WriteString(a)
	}
	e.b.WriteString(";\n")
}

// open starts a block directive.
func (e *emitter) open(name string, args ...string) {
	e.indent()
	e.b.WriteString(name)
	for _, a := range args {
		e.b.WriteByte(' ')
		e.b.WriteString(a)
	}
	e.b.WriteString(" {\n")
	e.depth++
}

// close ends the innermost block.
func (e *emitter) close() {
	e.depth--
	e.indent()
	e.b.WriteString("}\n")
}

func (e *emitter) blank() { e.b.WriteByte('\n') }

// raw writes fixed text of this package (comments, constant blocks), never
// user input.
func (e *emitter) raw(s string) { e.b.WriteString(s) }

func (e *emitter) bytes() []byte { return []byte(e.b.String()) }
