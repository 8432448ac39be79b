package nginx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// ErrNotFound means no nginx binary was found.
var ErrNotFound = errors.New("nginx not found: install the Debian package nginx or put nginx on PATH")

// Binary is an nginx executable. Every invocation uses a fixed argument
// vector built here; nothing is passed through a shell.
type Binary struct {
	Path string
}

// FindBinary looks for nginx on PATH, then in /usr/sbin.
func FindBinary() (*Binary, error) {
	if p, err := exec.LookPath("nginx"); err == nil {
		return &Binary{Path: p}, nil
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return &Binary{Path: p}, nil
		}
	}
	return nil, ErrNotFound
}

// Version returns nginx's version string, such as "1.22.1".
func (b *Binary) Version(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, b.Path, "-v").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("nginx -v: %w: %s", err, bytes.TrimSpace(out))
	}
	s := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return s[i+1:], nil
	}
	return s, nil
}

// Command returns an exec.Cmd for nginx with prefix (-p), main config (-c)
// and error log to stderr (-e), followed by extra arguments.
func (b *Binary) Command(ctx context.Context, prefix, conf string, extra ...string) *exec.Cmd {
	args := []string{"-p", prefix, "-c", conf, "-e", "stderr"}
	args = append(args, extra...)
	return exec.CommandContext(ctx, b.Path, args...)
}

// Test runs nginx -t on conf with the given prefix. On failure the error is
// a *TestError that carries nginx's output and the file and line it named.
func (b *Binary) Test(ctx context.Context, prefix, conf string) error {
	cmd := b.Command(ctx, prefix, conf, "-t", "-q")
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("nginx -t: %w", ctx.Err())
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return fmt.Errorf("nginx -t: %w", err)
	}
	return ParseTestOutput(out)
}

// TestError is a configuration nginx refused.
type TestError struct {
	// Output is everything nginx printed.
	Output string
	// Message is nginx's first [emerg] or [crit] line, without the
	// "nginx: [emerg] " prefix and the " in FILE:LINE" suffix.
	Message string
	// File and Line are where nginx pointed, when it did.
	File string
	Line int
}

func (e *TestError) Error() string {
	if e.File != "" {
		return fmt.Sprintf("nginx rejected the configuration: %s (%s:%d)", e.Message, e.File, e.Line)
	}
	return "nginx rejected the configuration: " + e.Message
}

var (
	// nginx: [emerg] unknown directive "foo" in /tmp/x/nginx.conf:12
	emergLine = regexp.MustCompile(`\[(emerg|crit|alert)\] (.*)$`)
	inFile    = regexp.MustCompile(` in (/[^ ]+):([0-9]+)$`)
	// With -e stderr nginx prefixes error log lines with "PID#TID: ".
	pidPrefix = regexp.MustCompile(`^[0-9]+#[0-9]+: `)
)

// ParseTestOutput turns the output of a failed nginx -t into a *TestError.
func ParseTestOutput(out []byte) *TestError {
	te := &TestError{Output: strings.TrimSpace(string(out))}
	for _, line := range strings.Split(te.Output, "\n") {
		m := emergLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		msg := pidPrefix.ReplaceAllString(m[2], "")
		if fm := inFile.FindStringSubmatch(msg); fm != nil {
			te.File = fm[1]
			te.Line, _ = strconv.Atoi(fm[2])
			msg = strings.TrimSuffix(msg, fm[0])
		}
		te.Message = msg
		break
	}
	if te.Message == "" {
		te.Message = firstLine(te.Output)
	}
	return te
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
