package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DatabaseURLEnv names the environment variable that points the tests at an
// existing PostgreSQL or CockroachDB server instead of a throwaway cluster.
const DatabaseURLEnv = "NXMESH_TEST_DATABASE_URL"

// pg is the one cluster of this test binary. It is package state because a
// test binary has exactly one lifetime; Main tears it down.
var pg struct {
	once sync.Once
	c    *cluster // nil until started, or when startup failed
	err  error
}

// Main runs the tests of a package that uses PostgresURL, then stops and
// removes the cluster if one was started. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	if pg.c != nil {
		if err := pg.c.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stop postgres: %v\n", err)
		}
	}
	return code
}

// PostgresURL returns the URL of a fresh, empty database that no other test
// uses. The first call starts a throwaway PostgreSQL cluster for the whole
// test binary (serializable by default, durability off); when
// NXMESH_TEST_DATABASE_URL is set, the database is created in that server
// instead. A missing PostgreSQL installation fails the test: it is never
// skipped.
func PostgresURL(t testing.TB) string {
	t.Helper()
	if base := os.Getenv(DatabaseURLEnv); base != "" {
		return externalDatabase(t, base)
	}
	pg.once.Do(func() { pg.c, pg.err = startCluster() })
	if pg.err != nil {
		t.Fatalf("testenv: %v", pg.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name, err := createDatabase(ctx, pg.c.url("postgres"))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return pg.c.url(name)
}

// externalDatabase creates a fresh database in the server at base and drops
// it when the test ends. If the server refuses (no CREATEDB privilege), base
// is used as is.
func externalDatabase(t testing.TB, base string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name, err := createDatabase(ctx, base)
	if err != nil {
		t.Logf("testenv: %v; using %s as is", err, DatabaseURLEnv)
		return base
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("testenv: parse %s: %v", DatabaseURLEnv, err)
	}
	u.Path = "/" + name
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" CASCADE"); err != nil {
			t.Logf("testenv: drop database %s: %v", name, err)
		}
	})
	return u.String()
}

// createDatabase creates a database with a random name through the server
// at adminURL and returns the name.
func createDatabase(ctx context.Context, adminURL string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	name := "t_" + hex.EncodeToString(b[:])
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", fmt.Errorf("connect to postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return name, nil
}

// cluster is a running throwaway PostgreSQL server.
type cluster struct {
	dir  string // temp dir: data/, the unix socket, postgres.log
	port int
	proc *os.Process
	done chan error // receives the postmaster's exit status once
}

func (c *cluster) url(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// stop shuts the server down (fast shutdown, then SIGKILL after a grace
// period) and removes its directory.
func (c *cluster) stop() error {
	_ = c.proc.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.proc.Kill()
		<-c.done
	}
	return os.RemoveAll(c.dir)
}

// missingHint tells the reader how to get PostgreSQL installed.
const missingHint = "install the Debian package postgresql-15 (run `make test-deps` as root)"

// postgresBinDir finds the directory holding initdb and postgres:
// `pg_config --bindir`, then PATH, then the newest /usr/lib/postgresql/*/bin.
func postgresBinDir() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); has(dir) {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[i])), 64)
		vj, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(dirs[j])), 64)
		return vi > vj
	})
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("postgresql server binaries (initdb, postgres) not found via pg_config, PATH or /usr/lib/postgresql/*/bin: %s", missingHint)
}

// startCluster runs initdb into a temp dir and starts postgres on a free
// loopback port, retrying with another port if the one picked was taken in
// the meantime.
func startCluster() (*cluster, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := dropCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "nxmesh-pg-")
	if err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"-A", "trust", "--no-sync", "-E", "UTF8", "--locale=C")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	for attempt := 0; ; attempt++ {
		c, err := startPostgres(bin, dir, cred)
		if err == nil {
			return c, nil
		}
		if attempt == 2 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

// dropCredential returns the credential of user nobody when running as root
// (initdb and postgres refuse to run as root), nil otherwise.
func dropCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return nil, fmt.Errorf("running as root and user nobody is missing: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user nobody: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startPostgres starts the postmaster and waits until it accepts a
// connection.
func startPostgres(bin, dir string, cred *syscall.Credential) (*cluster, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, "postgres"),
		"-D", filepath.Join(dir, "data"),
		"-p", strconv.Itoa(port),
		"-k", dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "default_transaction_isolation=serializable",
		"-c", "max_connections=200",
	)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}

	// Pdeathsig fires when the thread that forked the child exits, not the
	// process; Go may retire threads. So the child is started on a locked
	// thread whose goroutine lives until the child has exited.
	started := make(chan error, 1)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c := &cluster{dir: dir, port: port, proc: cmd.Process, done: done}

	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, c.url("postgres"))
		if err == nil {
			conn.Close(ctx)
			cancel()
			return c, nil
		}
		cancel()
		select {
		case werr := <-done:
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres exited during startup (%v):\n%s", werr, tail(out))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres not ready after 30s (last error: %v):\n%s", err, tail(out))
		}
	}
}

// tail returns the last few lines of a log for an error message.
func tail(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return bytes.Join(lines, []byte("\n"))
}
