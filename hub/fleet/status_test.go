package fleet

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/wire"
)

// nicedThreads counts this process's threads at nice n.
func nicedThreads(t *testing.T, n int) int {
	t.Helper()
	stats, err := filepath.Glob("/proc/self/task/*/stat")
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // the thread ended
		}
		// Fields after the command's closing parenthesis start at the
		// third, the state; nice is the nineteenth.
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if nice, err := strconv.Atoi(fields[19-3]); err == nil && nice == n {
			count++
		}
	}
	return count
}

// TestStatusWriterYields: the status writer runs on a thread of its own at
// nice writerNice while the fleet runs, and writes status from it. (The
// thread ends with the writer, or, should it be the process's main
// thread, is parked for good: Go never runs another goroutine on it.)
func TestStatusWriterYields(t *testing.T) {
	// A thread left by an earlier run (see above) is counted before.
	before := nicedThreads(t, writerNice)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f, db := oneAgentFleet(t)
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for nicedThreads(t, writerNice) != before+1 {
		if time.Now().After(deadline) {
			t.Fatalf("no thread at nice %d while the fleet runs", writerNice)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rs := relayWithoutConn(f)
	f.addRelay(rs, []wire.AgentSession{{ID: "a1", Workspace: "default"}})
	for {
		a, err := db.GetAgent(ctx, "a1")
		if err != nil {
			t.Fatal(err)
		}
		if a.Relay == "relay-1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the status writer did not record the agent's relay")
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.removeRelay(rs) // it has no connection for Run to close
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
