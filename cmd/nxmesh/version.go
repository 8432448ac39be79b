package main

import (
	"errors"
	"fmt"
	"runtime"
)

// Set at link time by the Makefile: -X main.version=... -X main.commit=...
var (
	version = "dev"
	commit  = "unknown"
)

type versionCmd struct{}

func (versionCmd) Run(g *Globals) error {
	_, err := fmt.Fprintf(g.stdout, "nxmesh %s\ncommit %s\n%s %s/%s\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

// exitCoder is an error that asks for a specific exit status, such as
// validate's 1 for "the files are invalid" as opposed to 2 for bad usage.
type exitCoder interface {
	error
	ExitCode() int
}

func asExitCoder(err error, target *exitCoder) bool { return errors.As(err, target) }
