package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/schema"
)

// inputFlags name the resource files and the agent a command compiles for.
type inputFlags struct {
	Files      []string          `name:"file" short:"f" required:"" type:"existingfile" placeholder:"FILE" help:"Resource file (YAML or JSON, documents separated by ---, or a list as nxmesh get -o yaml prints it); repeat for several."`
	Labels     map[string]string `mapsep:"," placeholder:"K=V,..." help:"The agent's labels: only virtual hosts whose selector matches them are compiled, with the upstreams and certificates they use."`
	StaticRoot []string          `placeholder:"DIR" help:"Directory static roots must lie under (repeatable; default /var/www and /srv/www)."`
}

// exitError ends a command with a given exit status: 1 for invalid input,
// 2 for bad usage. An empty message prints nothing more.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
func (e *exitError) ExitCode() int { return e.code }

var _ exitCoder = (*exitError)(nil)

// load reads, decodes and validates the files. On invalid input it prints
// every problem to w, one a line, and returns an *exitError with status 1.
func (in *inputFlags) load(w io.Writer) ([]schema.Resource, error) {
	var set []schema.Resource
	var problems []string
	for _, f := range in.Files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, &exitError{code: 2, msg: err.Error()}
		}
		rs, err := decodeFile(f, data)
		if err != nil {
			problems = append(problems, errorLines(err)...)
			continue
		}
		set = append(set, rs...)
	}
	if len(problems) == 0 {
		if err := schema.ValidateSet("", set); err != nil {
			problems = errorLines(err)
		}
	}
	if len(problems) > 0 {
		return nil, invalid(w, problems)
	}
	return set, nil
}

// invalid prints problems and returns the exit-1 error that summarises them.
func invalid(w io.Writer, problems []string) error {
	for _, p := range problems {
		fmt.Fprintln(w, p)
	}
	noun := "problems"
	if len(problems) == 1 {
		noun = "problem"
	}
	return &exitError{code: 1, msg: fmt.Sprintf("the input is invalid (%d %s)", len(problems), noun)}
}

// errorLines returns one line per schema field error, or the error itself.
func errorLines(err error) []string {
	var es schema.Errors
	if errors.As(err, &es) {
		out := make([]string, len(es))
		for i, e := range es {
			out[i] = e.Error()
		}
		return out
	}
	return []string{err.Error()}
}

// where prefixes msg with the file and document of the resource of the
// given kind and name, so that compile and nginx -t errors point at the
// input like schema errors do.
func where(set []schema.Resource, kind, name, msg string) string {
	for _, r := range set {
		if string(r.Kind) == kind && r.Metadata.Name == name && r.Source.File != "" {
			return fmt.Sprintf("%s: document %d: %s", r.Source.File, r.Source.Document, msg)
		}
	}
	return msg
}

// compileError turns a Compile error into a line naming the input.
func compileError(set []schema.Resource, err error) string {
	var ce *nginx.CompileError
	if errors.As(err, &ce) {
		return where(set, string(ce.Kind), ce.Name, err.Error())
	}
	return err.Error()
}

type renderCmd struct {
	inputFlags `embed:""`

	Out          string `required:"" type:"path" placeholder:"DIR" help:"Directory to write the bundle to; it must be empty or missing unless --force."`
	Force        bool   `help:"Write into a non-empty --out directory, replacing files of the same name (others are left alone)."`
	Mode         string `enum:"managed,include" default:"managed" help:"managed: a complete nginx configuration; include: http-level files for your own nginx.conf."`
	IncludeRoot  string `placeholder:"DIR" help:"Include mode: the absolute directory the bundle will live in (include paths are made absolute with it)."`
	StatusListen string `default:"127.0.0.1:8765" placeholder:"ADDR" help:"Loopback address:port of the status server."`
}

func (c *renderCmd) Help() string {
	return "Reads and validates the resource files, compiles the bundle of nginx files for one agent, writes it to --out and prints its hash alone on stdout. Exit status: 0 on success, 1 for invalid input, 2 for usage errors."
}

func (c *renderCmd) Run(g *Globals) error {
	opts := nginx.Options{Labels: c.Labels, StaticRoots: c.StaticRoot, StatusListen: c.StatusListen, IncludeRoot: c.IncludeRoot}
	if c.Mode == "include" {
		opts.Mode = nginx.Include
	} else if c.IncludeRoot != "" {
		return &exitError{code: 2, msg: "--include-root is only for --mode include"}
	}
	if !c.Force {
		entries, err := os.ReadDir(c.Out)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return &exitError{code: 2, msg: err.Error()}
		}
		if len(entries) > 0 {
			return &exitError{code: 2, msg: fmt.Sprintf("--out %s is not empty; pass --force to write into it", c.Out)}
		}
	}
	set, err := c.load(g.stderr)
	if err != nil {
		return err
	}
	b, err := nginx.Compile(set, opts)
	if err != nil {
		var ce *nginx.CompileError
		if errors.As(err, &ce) && ce.Kind == "" {
			return &exitError{code: 2, msg: err.Error()} // a bad flag value
		}
		return invalid(g.stderr, []string{compileError(set, err)})
	}
	if err := b.Write(c.Out); err != nil {
		return err
	}
	_, err = fmt.Fprintln(g.stdout, b.Hash)
	return err
}
