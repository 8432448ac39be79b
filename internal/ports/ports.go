// Package ports hands out loopback TCP ports for servers that are started
// next, in another process: the tests' nginx and daemons, and the bench's
// hub and relays.
package ports

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Free returns a TCP port on 127.0.0.1 that was free a moment ago.
//
// It is taken below the kernel's ephemeral range: a port the kernel hands
// out for "127.0.0.1:0" is also what it hands out as the source port of
// outgoing connections, and tests running in parallel (or the bench's
// tens of thousands of agents) make thousands of those, so such a port
// could be taken by someone's client before the server bound it (seen:
// the demo test's "address already in use"). Ports below the range are
// taken only by servers that ask for them. A port this process handed out
// is not handed out again.
func Free() (int, error) {
	mu.Lock()
	defer mu.Unlock()
	lo, hi := quiet()
	for range 1000 {
		p := lo + rand.IntN(hi-lo)
		if given[p] {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l.Close()
		given[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("free port: none free in %d-%d after 1000 tries", lo, hi)
}

var (
	mu    sync.Mutex
	given = map[int]bool{}
)

// quiet is the range Free draws from: the 10,000 ports below the kernel's
// ephemeral range (net.ipv4.ip_local_port_range), or 20000-30000 when that
// cannot be read.
func quiet() (lo, hi int) {
	lo, hi = 20000, 30000
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return lo, hi
	}
	first, err := strconv.Atoi(f[0])
	if err != nil || first < 11024 {
		return lo, hi
	}
	return first - 10000, first
}
