package fleet

import (
	"sync"

	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/wire"
)

// delta is what turns one compiled bundle into another (nginx.Diff),
// encoded once for every relay that needs it (DESIGN: when the relay knows
// the agent's current bundle, it sends only the files that changed).
type delta struct {
	base, hash string
	size       int64 // before encoding
	encoding   string
	payload    []byte
}

// smallDelta is the largest delta sent without compression: inflating a
// few hundred bytes costs each of thousands of agents more CPU than the
// bytes it saves cost the network (nginx's gzip_min_length reasons alike).
const smallDelta = 1 << 10

// maxDeltas bounds the cache of computed deltas. A push makes one per
// (bundle the agents run, bundle they get) pair, a handful per workspace;
// the cache is emptied when it fills.
const maxDeltas = 1024

// deltaKey names a delta: from base to hash.
type deltaKey struct{ base, hash string }

// deltas computes and caches deltas between bundles this hub compiled. A
// nil entry records that no delta is worth sending for the pair: the base
// was not compiled here (an older revision, another hub's), or the delta
// is no smaller than the bundle.
type deltas struct {
	revs *revisions

	mu sync.Mutex // guards m
	m  map[deltaKey]*delta
}

// get returns the delta from base to the bundle to, or nil when there is
// none worth sending.
func (c *deltas) get(base string, to *bundle) *delta {
	k := deltaKey{base, to.hash}
	c.mu.Lock()
	d, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return d
	}
	d = c.compute(base, to)
	c.mu.Lock()
	if len(c.m) >= maxDeltas {
		clear(c.m)
	}
	c.m[k] = d
	c.mu.Unlock()
	return d
}

func (c *deltas) compute(base string, to *bundle) *delta {
	from := c.revs.lookup(base)
	if from == nil {
		return nil
	}
	data := nginx.Diff(from.files, to.files)
	d := &delta{base: base, hash: to.hash, size: int64(len(data)), encoding: wire.EncodingIdentity, payload: data}
	if len(data) > smallDelta {
		z, err := wire.Compress(data)
		if err != nil {
			return nil
		}
		d.encoding, d.payload = wire.EncodingGzip, z
	}
	if len(d.payload) >= len(to.payload) {
		return nil
	}
	return d
}
