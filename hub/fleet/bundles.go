package fleet

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/schema"
	"github.com/nxmesh/nxmesh/wire"
)

// LabelStatusPort is the agent label that moves the status server of the
// agent's bundles off nginx.DefaultStatusListen's port, for several agents
// on one machine (the demo, tests). Its value is a port number; the agent
// must be started with the same --status-listen.
const LabelStatusPort = "nxmesh.io/status-port"

// bundle is one compiled bundle, compressed once for every relay.
type bundle struct {
	hash    string
	size    int64  // uncompressed
	payload []byte // wire.Compress of the binary encoding
	// files is the compiled bundle, kept for deltas to and from it.
	files *nginx.Bundle
}

// revisionSet is a workspace's resources at one revision and the bundles
// compiled from them so far, by selection key.
type revisionSet struct {
	ws  string
	rev int64
	set []schema.Resource

	mu    sync.Mutex // guards bySel; held while compiling
	bySel map[string]*bundle
	errs  map[string]error
}

// statusListen is the status server address for an agent with labels.
func statusListen(labels map[string]string) string {
	if p := labels[LabelStatusPort]; p != "" {
		return "127.0.0.1:" + p
	}
	return nginx.DefaultStatusListen
}

// selectionKey identifies what the compiler's output depends on among an
// agent's labels: which virtual hosts select it, and its status address.
// Agents with equal keys get the same bundle, so 10,000 agents that differ
// only in a hostname label cost one compile.
func (r *revisionSet) selectionKey(labels map[string]string) string {
	var b strings.Builder
	b.WriteString(statusListen(labels))
	b.WriteByte('|')
	for i := range r.set {
		if vh, ok := r.set[i].Spec.(*schema.VirtualHostSpec); ok {
			if vh.Selector.Matches(labels) {
				b.WriteByte('1')
			} else {
				b.WriteByte('0')
			}
		}
	}
	return b.String()
}

// bundleFor returns the bundle of an agent with labels, compiling it on
// first use.
func (r *revisionSet) bundleFor(labels map[string]string) (*bundle, error) {
	key := r.selectionKey(labels)
	r.mu.Lock()
	defer r.mu.Unlock()
	if b := r.bySel[key]; b != nil {
		return b, nil
	}
	if err := r.errs[key]; err != nil {
		return nil, err
	}
	b, err := compile(r.set, labels)
	if err != nil {
		err = fmt.Errorf("compile workspace %q revision %d: %w", r.ws, r.rev, err)
		r.errs[key] = err
		return nil, err
	}
	r.bySel[key] = b
	return b, nil
}

func compile(set []schema.Resource, labels map[string]string) (*bundle, error) {
	nb, err := nginx.Compile(set, nginx.Options{Labels: labels, StatusListen: statusListen(labels)})
	if err != nil {
		return nil, err
	}
	data, err := nb.MarshalBinary()
	if err != nil {
		return nil, err
	}
	payload, err := wire.Compress(data)
	if err != nil {
		return nil, err
	}
	return &bundle{hash: nb.Hash, size: int64(len(data)), payload: payload, files: nb}, nil
}

// revisions caches revisionSets: each workspace's newest and a few older
// ones (the convergence of an older revision is asked for while a rollout
// is in flight).
type revisions struct {
	db *store.DB

	mu   sync.Mutex // guards sets
	sets map[string][]*revisionSet
}

// keepPerWorkspace is how many revisions of a workspace stay compiled.
const keepPerWorkspace = 4

func (c *revisions) get(ctx context.Context, ws string, rev int64) (*revisionSet, error) {
	c.mu.Lock()
	for _, r := range c.sets[ws] {
		if r.rev == rev {
			c.mu.Unlock()
			return r, nil
		}
	}
	c.mu.Unlock()
	var set []schema.Resource
	if rev > 0 {
		var err error
		if set, err = c.db.ResourcesAt(ctx, ws, rev); err != nil {
			return nil, err
		}
	}
	r := &revisionSet{ws: ws, rev: rev, set: set, bySel: map[string]*bundle{}, errs: map[string]error{}}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, old := range c.sets[ws] {
		if old.rev == rev {
			return old, nil // loaded concurrently
		}
	}
	list := append([]*revisionSet{r}, c.sets[ws]...)
	if len(list) > keepPerWorkspace {
		list = list[:keepPerWorkspace]
	}
	c.sets[ws] = list
	return r, nil
}

// lookup finds a compiled bundle by hash in any cached revision.
func (c *revisions) lookup(hash string) *bundle {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, list := range c.sets {
		for _, r := range list {
			r.mu.Lock()
			for _, b := range r.bySel {
				if b.hash == hash {
					r.mu.Unlock()
					return b
				}
			}
			r.mu.Unlock()
		}
	}
	return nil
}
