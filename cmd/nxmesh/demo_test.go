package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/internal/testenv"
)

// lineWatcher collects a command's output and tells when a line with a
// prefix appears.
type lineWatcher struct {
	mu    sync.Mutex // guards buf, lines
	buf   bytes.Buffer
	lines []string
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	w.lines = w.lines[:0]
	sc := bufio.NewScanner(bytes.NewReader(w.buf.Bytes()))
	for sc.Scan() {
		w.lines = append(w.lines, sc.Text())
	}
	return len(p), nil
}

func (w *lineWatcher) find(prefix string) (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range w.lines {
		if strings.HasPrefix(l, prefix) {
			return l, true
		}
	}
	return "", false
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// TestDemo runs nxmesh demo as `make demo` does (real hub, relay, agent and
// nginx), pastes the curl line it prints into a shell, stops it as Ctrl-C
// would, and runs it again to check that it resumes.
func TestDemo(t *testing.T) {
	testenv.NginxBinary(t) // fails, naming the package, when nginx is missing
	dir := t.TempDir()
	free := func() string { return "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)) }
	cmd := demoCmd{DataDir: dir, APIAddr: free(), AgentAddr: free(), RelayAddr: free(),
		Port: testenv.FreePort(t), StatusPort: testenv.FreePort(t), UpstreamAddr: free()}

	for _, run := range []string{"first run", "resumed"} {
		out := &lineWatcher{}
		g := &Globals{LogLevel: slog.LevelInfo, LogFormat: "text", stdout: out, stderr: io.Discard}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- cmd.Run(ctx, g) }()

		var line string
		deadline := time.Now().Add(90 * time.Second)
		for {
			var ok bool
			if line, ok = out.find("curl "); ok {
				break
			}
			select {
			case err := <-done:
				cancel()
				t.Fatalf("%s: demo ended before printing a curl line: %v\n%s", run, err, out)
			case <-time.After(50 * time.Millisecond): // polling the output
			}
			if time.Now().After(deadline) {
				cancel()
				t.Fatalf("%s: no curl line after 90 s:\n%s", run, out)
			}
		}
		got, err := exec.Command("sh", "-c", line).CombinedOutput()
		if err != nil || !strings.Contains(string(got), "Hello from the NxMesh demo upstream") {
			t.Errorf("%s: pasting %q: %v\n%s", run, line, err, got)
		}
		if _, ok := out.find("Admin password: "); !ok {
			t.Errorf("%s: no admin password shown:\n%s", run, out)
		}
		if run == "resumed" && !strings.Contains(out.String(), "resuming at revision 1") {
			t.Errorf("second run did not resume:\n%s", out)
		}

		cancel() // what Ctrl-C does
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: demo stopped with %v", run, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: demo did not stop within 30 s of the interrupt", run)
		}
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(cmd.Port)); err == nil {
			c.Close()
			t.Errorf("%s: nginx still listens after the demo stopped", run)
		}
	}
}
