package bench

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// referenceMessages is how many messages one reference measure sends, in
// three runs: about a third of a second here.
const referenceMessages = 45000

// referenceSize is the plaintext size of a reference message: about a
// delta's or a result's.
const referenceSize = 100

// measureReference is what this machine charges now for the part of a push
// that is the same whatever the code: one small message sealed with
// AES-GCM (as TLS 1.3 does), written to a loopback TCP socket, read at the
// other end and opened. It returns the CPU time per message, the median of
// three runs of n/3 messages.
//
// The push's CPU per agent divided by it is a cost in reference messages
// that stays put when the hour changes: this shared machine's speed drifts
// by a third within an hour, which moves a push's time as much as any
// change to the code does.
func measureReference(n int) (time.Duration, error) {
	runs := make([]time.Duration, 3)
	for i := range runs {
		cpu, sent, err := referenceRun(max(n/3, 1))
		if err != nil {
			return 0, fmt.Errorf("reference measure: %w", err)
		}
		runs[i] = cpu / time.Duration(sent)
	}
	slices.Sort(runs)
	return runs[1], nil
}

// referenceRun sends n messages over a loopback TCP connection, alternating
// its ends, on one locked thread: no goroutine switch, no wake-up, only the
// work itself. It returns the thread's CPU time (user and system) and how
// many messages arrived whole.
func referenceRun(n int) (cpu time.Duration, sent int, err error) {
	a, b, err := loopbackPair()
	if err != nil {
		return 0, 0, err
	}
	defer a.Close()
	defer b.Close()
	// File puts the sockets in blocking mode: a read waits for its
	// message instead of returning EAGAIN.
	fa, err := a.File()
	if err != nil {
		return 0, 0, err
	}
	defer fa.Close()
	fb, err := b.File()
	if err != nil {
		return 0, 0, err
	}
	defer fb.Close()

	block, err := aes.NewCipher(make([]byte, 16))
	if err != nil {
		return 0, 0, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return 0, 0, err
	}
	nonce := make([]byte, aead.NonceSize())
	plain := make([]byte, referenceSize)
	sealed := make([]byte, 0, referenceSize+aead.Overhead())
	in := make([]byte, 2*cap(sealed))
	opened := make([]byte, 0, referenceSize)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	w, r := int(fa.Fd()), int(fb.Fd())
	t0, err := threadCPU()
	if err != nil {
		return 0, 0, err
	}
	for range n {
		sealed = aead.Seal(sealed[:0], nonce, plain, nil)
		if _, err := syscall.Write(w, sealed); err != nil {
			return 0, sent, os.NewSyscallError("write", err)
		}
		got, err := syscall.Read(r, in)
		if err != nil {
			return 0, sent, os.NewSyscallError("read", err)
		}
		// A loopback write is delivered before it returns: the read has
		// all of it.
		if got != len(sealed) {
			return 0, sent, fmt.Errorf("read %d bytes of a %d-byte message", got, len(sealed))
		}
		if opened, err = aead.Open(opened[:0], nonce, in[:got], nil); err != nil {
			return 0, sent, err
		}
		sent++
		w, r = r, w
	}
	t1, err := threadCPU()
	if err != nil {
		return 0, sent, err
	}
	return t1 - t0, sent, nil
}

// loopbackPair is both ends of a TCP connection on 127.0.0.1.
func loopbackPair() (a, b *net.TCPConn, err error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	type accepted struct {
		c   *net.TCPConn
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		c, err := ln.AcceptTCP()
		ch <- accepted{c, err}
	}()
	a, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		ln.Close() // ends the Accept
		<-ch
		return nil, nil, err
	}
	acc := <-ch
	if acc.err != nil {
		a.Close()
		return nil, nil, acc.err
	}
	return a, acc.c, nil
}

// threadCPU is the CPU time the calling thread has used.
func threadCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0, os.NewSyscallError("getrusage", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
