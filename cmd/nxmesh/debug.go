package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// debugFlags add a loopback listener with Go's profiler to a daemon.
type debugFlags struct {
	DebugAddr string `help:"Serve Go's pprof profiles on this address (loopback only, e.g. 127.0.0.1:6060); off when empty."`
}

// serveDebug serves /debug/pprof/ on f.DebugAddr until ctx ends. It
// refuses addresses that are not loopback: profiles show memory contents.
func (f debugFlags) serveDebug(ctx context.Context, log *slog.Logger) error {
	if f.DebugAddr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(f.DebugAddr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--debug-addr %q must be a loopback address such as 127.0.0.1:6060", f.DebugAddr)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Addr: f.DebugAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	log.Info("serving pprof", "addr", f.DebugAddr)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("debug listener: %w", err)
	}
	return nil
}
