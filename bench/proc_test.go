package bench

import (
	"crypto/sha256"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

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
		t0 := threadCPU(t)
		sum := sha256.Sum256(nil)
		for range 200000 {
			sum = sha256.Sum256(sum[:])
		}
		burned <- threadCPU(t) - t0
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

// threadCPU is the CPU time the calling thread has used, from getrusage.
func threadCPU(t *testing.T) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		t.Error(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
