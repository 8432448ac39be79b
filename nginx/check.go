package nginx

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/nxmesh/nxmesh/schema"
)

// CheckError is a bundle nginx -t refused. It names the resource whose file
// nginx pointed at, when it pointed at one, and quotes nginx's own message.
type CheckError struct {
	// Kind and Name identify the resource; empty when nginx named no file
	// of a resource (the main file, a file of NxMesh's own).
	Kind string
	Name string
	// Test is nginx's error, with File made relative to the bundle root
	// and the throwaway directory removed from Message and Output.
	Test *TestError
}

// Error formats the error as `nginx -t: KIND "NAME" (FILE:LINE): MESSAGE`.
func (e *CheckError) Error() string {
	var b strings.Builder
	b.WriteString("nginx -t")
	if e.Kind != "" {
		fmt.Fprintf(&b, ": %s %q", e.Kind, e.Name)
	}
	if e.Test.File != "" {
		fmt.Fprintf(&b, " (%s:%d)", e.Test.File, e.Test.Line)
	}
	b.WriteString(": " + e.Test.Message)
	return b.String()
}

// Unwrap returns the *TestError.
func (e *CheckError) Unwrap() error { return e.Test }

// ResourceForFile maps a bundle path (relative, as in File.Path) to the
// resource it was compiled from: vhosts/NAME.conf is VirtualHost NAME,
// upstreams/NAME.conf is Upstream NAME, certs/NAME.crt and certs/NAME.key
// are Certificate NAME. Other paths report ok false.
func ResourceForFile(path string) (kind, name string, ok bool) {
	dir, file, found := strings.Cut(path, "/")
	if !found || strings.Contains(file, "/") {
		return "", "", false
	}
	var exts []string
	switch dir {
	case "vhosts":
		kind, exts = string(schema.KindVirtualHost), []string{".conf"}
	case "upstreams":
		kind, exts = string(schema.KindUpstream), []string{".conf"}
	case "certs":
		kind, exts = string(schema.KindCertificate), []string{".crt", ".key"}
	default:
		return "", "", false
	}
	for _, ext := range exts {
		if n, cut := strings.CutSuffix(file, ext); cut {
			if _, err := resourceName(n); err == nil {
				return kind, n, true
			}
		}
	}
	return "", "", false
}

// Check writes b into a throwaway prefix (with logs/ and tmp/) and runs
// nginx -t on it. nginx -t is not a sandbox: it loads what the
// configuration names and opens the files it points at. So when the caller
// is root, nginx runs as the unprivileged user "nobody", which owns the
// throwaway tree and nothing else, keeping only CAP_NET_BIND_SERVICE
// because nginx -t binds the ports the configuration listens on. Check supports Managed bundles (those
// with MainFile); an Include bundle is checked by the caller with its own
// main file.
//
// A refused bundle gives a *CheckError wrapping the *TestError.
func Check(ctx context.Context, bin *Binary, b *Bundle) error {
	if b.File(MainFile) == nil {
		return fmt.Errorf("check bundle %s: no %s (only managed-mode bundles can be checked alone)", b.Hash, MainFile)
	}
	dir, err := os.MkdirTemp("", "nxmesh-check-")
	if err != nil {
		return fmt.Errorf("check bundle %s: %w", b.Hash, err)
	}
	defer os.RemoveAll(dir)
	if err := b.Write(dir); err != nil {
		return fmt.Errorf("check bundle: %w", err)
	}
	for _, d := range []string{"logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("check bundle %s: %w", b.Hash, err)
		}
	}
	cmd := bin.Command(ctx, dir, filepath.Join(dir, MainFile), "-t", "-q")
	if os.Geteuid() == 0 {
		cred, err := nobody()
		if err != nil {
			return fmt.Errorf("check bundle %s: %w", b.Hash, err)
		}
		if err := chownTree(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("check bundle %s: %w", b.Hash, err)
		}
		// nginx -t binds the listen sockets (it tolerates only "address in
		// use"), so the unprivileged process keeps the one capability that
		// lets it bind ports below 1024, and nothing else.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, AmbientCaps: []uintptr{capNetBindService}}
	}
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("nginx -t: %w", ctx.Err())
	}
	var exitErr interface{ ExitCode() int }
	if !errors.As(err, &exitErr) {
		return fmt.Errorf("nginx -t: %w", err)
	}
	te := ParseTestOutput(out)
	return checkError(te, dir)
}

// checkError rewrites te's paths relative to the bundle root dir and names
// the resource nginx pointed at (by file, else by a bundle path quoted in
// the message, as in "cannot load certificate").
func checkError(te *TestError, dir string) *CheckError {
	strip := func(s string) string { return strings.ReplaceAll(s, dir+string(filepath.Separator), "") }
	t := *te
	t.Output, t.Message = strip(t.Output), strip(t.Message)
	if rel, err := filepath.Rel(dir, t.File); t.File != "" && err == nil && !strings.HasPrefix(rel, "..") {
		t.File = filepath.ToSlash(rel)
	}
	ce := &CheckError{Test: &t}
	if k, n, ok := ResourceForFile(t.File); ok {
		ce.Kind, ce.Name = k, n
		return ce
	}
	for _, field := range strings.FieldsFunc(t.Message, func(r rune) bool { return r == '"' || r == ' ' || r == ':' }) {
		if k, n, ok := ResourceForFile(field); ok {
			ce.Kind, ce.Name = k, n
			break
		}
	}
	return ce
}

// capNetBindService is CAP_NET_BIND_SERVICE (linux/capability.h).
const capNetBindService = 10

// nobody returns the credential of the user "nobody".
func nobody() (*syscall.Credential, error) {
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("look up user nobody for an unprivileged nginx -t: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user nobody has a non-numeric uid %q or gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

func chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}
