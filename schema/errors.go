package schema

import (
	"fmt"
	"strconv"
	"strings"
)

// maxErrors caps how many errors one Decode, Validate or ValidateSet call
// collects: enough to fix a file in one pass, bounded so that a hostile
// document cannot make an error response arbitrarily large.
const maxErrors = 50

// FieldError is one problem with one field of one document. Callers get it
// (or Errors, a list of them) with errors.As; the REST API reports Field.
type FieldError struct {
	// File is the name the caller gave the input; empty when unknown.
	File string
	// Document is the 1-based position of the document in its file, or 0
	// when unknown.
	Document int
	// Field is the path of the offending field, such as
	// spec.locations[0].path; empty for problems with a whole document.
	Field string
	// Message starts lower-case and says what is allowed. It never contains
	// private key material.
	Message string
}

// Error formats the error as `file: document N: field: message`, leaving out
// the parts that are unknown.
func (e *FieldError) Error() string {
	parts := make([]string, 0, 4)
	if e.File != "" {
		parts = append(parts, e.File)
	}
	if e.Document > 0 {
		parts = append(parts, "document "+strconv.Itoa(e.Document))
	}
	if e.Field != "" {
		parts = append(parts, e.Field)
	}
	if e.Message != "" {
		parts = append(parts, e.Message)
	}
	return strings.Join(parts, ": ")
}

// Errors is a list of field errors, in the order they were found. Decode,
// Validate and ValidateSet return it (never an empty one) so that a user can
// fix every problem of a file at once.
type Errors []*FieldError

// Error joins the errors with newlines, showing at most the first 50.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i == maxErrors {
			fmt.Fprintf(&b, "\n(%d more errors not shown)", len(es)-maxErrors)
			break
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the individual errors, so errors.As can find the first
// *FieldError in a list.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// errorList collects field errors for one file, capped at maxErrors. The
// caller sets doc before checking each document.
type errorList struct {
	file    string
	doc     int
	errs    Errors
	dropped int
}

// add records an error for field (a path; empty for the whole document).
func (l *errorList) add(field, format string, args ...any) {
	if len(l.errs) >= maxErrors {
		l.dropped++
		return
	}
	l.errs = append(l.errs, &FieldError{File: l.file, Document: l.doc, Field: field, Message: fmt.Sprintf(format, args...)})
}

// err returns the collected errors as an error, or nil when there are none.
func (l *errorList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	out := l.errs
	if l.dropped > 0 {
		out = append(out[:len(out):len(out)], &FieldError{File: l.file, Message: fmt.Sprintf("%d more errors not shown", l.dropped)})
	}
	return out
}

// quote renders a user-supplied value for an error message: quoted, with
// control characters escaped, and cut short so messages stay small.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
