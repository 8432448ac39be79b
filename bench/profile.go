package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"
)

// profileWindow is the length of one CPU profile: short enough that a
// window rarely spans two phases, long enough to hold a useful sample.
const profileWindow = 2 * time.Second

// profiler takes CPU profiles of the daemons (from their --debug-addr) and
// of the bench itself, in back-to-back windows, for as long as the run
// lasts. Each window is a file named after the process and the phase it
// began in, so that
//
//	go tool pprof -top DIR/relay-1-push-*.pprof
//
// merges every window of one process in one phase.
type profiler struct {
	dir   string
	phase func() string // the sampler's phase now
}

// run profiles the daemons procs returns and this process until ctx ends.
func (p *profiler) run(ctx context.Context, procs []*proc) {
	done := make(chan struct{})
	n := 1
	go func() { p.loop(ctx, benchProc, p.self); done <- struct{}{} }()
	for _, pr := range procs {
		if pr.debugAddr == "" {
			continue
		}
		n++
		url := "http://" + pr.debugAddr + "/debug/pprof/profile?seconds=" + fmt.Sprint(int(profileWindow/time.Second))
		go func() {
			p.loop(ctx, pr.name, func(ctx context.Context) ([]byte, error) { return fetch(ctx, url) })
			done <- struct{}{}
		}()
	}
	for range n {
		<-done
	}
}

// loop writes one window after the other. A daemon that is down (a relay
// killed by a storm) is asked again shortly.
func (p *profiler) loop(ctx context.Context, name string, take func(context.Context) ([]byte, error)) {
	for seq := 1; ctx.Err() == nil; seq++ {
		phase := phaseKind(p.phase())
		data, err := take(ctx)
		if err != nil || len(data) == 0 {
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		path := filepath.Join(p.dir, fmt.Sprintf("%s-%s-%03d.pprof", name, phase, seq))
		_ = os.WriteFile(path, data, 0o644)
	}
}

// self profiles this process for one window.
func (p *profiler) self(ctx context.Context) ([]byte, error) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		return nil, err
	}
	select {
	case <-ctx.Done():
	case <-time.After(profileWindow):
	}
	pprof.StopCPUProfile()
	return buf.Bytes(), nil
}

// fetch GETs url's body.
func fetch(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// phaseKind is a phase's first word ("push 3/10" is "push"), usable in a
// file name.
func phaseKind(phase string) string {
	kind, _, _ := strings.Cut(phase, " ")
	if kind == "" {
		return "start"
	}
	return strings.ToLower(kind)
}

// snapshotProfiles writes the heap and goroutine profiles of every daemon
// as NAME-heap-LABEL.pprof and NAME-goroutine-LABEL.pprof, and its
// runtime.MemStats (stacks included) as NAME-memstats-LABEL.txt: what the
// memory of idle sessions is made of.
func snapshotProfiles(ctx context.Context, dir, label string, procs []*proc) {
	for _, pr := range procs {
		if pr.debugAddr == "" {
			continue
		}
		for _, kind := range []string{"heap", "goroutine"} {
			data, err := fetch(ctx, "http://"+pr.debugAddr+"/debug/pprof/"+kind)
			if err != nil {
				continue
			}
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%s-%s.pprof", pr.name, kind, label)), data, 0o644)
		}
		if data, err := fetch(ctx, "http://"+pr.debugAddr+"/debug/pprof/heap?debug=1"); err == nil {
			if i := bytes.Index(data, []byte("\n# runtime.MemStats")); i >= 0 {
				data = data[i+1:]
			}
			_ = os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-memstats-%s.txt", pr.name, label)), data, 0o644)
		}
	}
}
