package bench

import (
	"crypto/sha256"
	"os"
	"runtime"
	"testing"
	"time"
)

func TestReferenceRunSendsEveryMessage(t *testing.T) {
	const n = 3000
	cpu, sent, err := referenceRun(n)
	if err != nil {
		t.Fatal(err)
	}
	if sent != n || cpu <= 0 {
		t.Fatalf("%d of %d messages arrived whole, in %v of CPU time", sent, n, cpu)
	}
}

// TestThreadsCPUCountsEveryThread checks the per-thread sum against the
// burning thread's own count: a process's figure holds what its threads
// did.
func TestThreadsCPUCountsEveryThread(t *testing.T) {
	before, err := threadsCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	burned := make(chan time.Duration, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		t0, _ := threadCPU()
		sum := sha256.Sum256(nil)
		for range 200000 {
			sum = sha256.Sum256(sum[:])
		}
		t1, _ := threadCPU()
		burned <- t1 - t0
	}()
	b := <-burned
	after, err := threadsCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// schedstat and getrusage both come from the scheduler's
	// sum_exec_runtime; getrusage rounds it to microseconds.
	if b <= 0 || after-before < b-time.Millisecond {
		t.Fatalf("the process's threads used %v while one of them burned %v", after-before, b)
	}
}

// BenchmarkReference is measureReference's unit of work: one message
// sealed, written, read and opened.
func BenchmarkReference(b *testing.B) {
	cpu, sent, err := referenceRun(b.N)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(sent), "cpu-ns/msg")
}
