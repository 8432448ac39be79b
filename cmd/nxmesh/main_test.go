package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"nxmesh " + version, "commit " + commit, runtime.Version()} {
		if !strings.Contains(out, want) {
			t.Errorf("version output %q lacks %q", out, want)
		}
	}
}

// TestHelpListsCommands: --help lists exactly the commands in the cli
// struct, so it never advertises one that does not exist.
func TestHelpListsCommands(t *testing.T) {
	code, out, _ := runCLI(t, "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var cmds []string
	inCommands := false
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Commands:") {
			inCommands = true
			continue
		}
		if inCommands && strings.HasPrefix(line, "  ") && !strings.HasPrefix(line, "   ") {
			cmds = append(cmds, strings.Fields(line)[0])
		}
		if inCommands && line == "" && len(cmds) > 0 {
			break
		}
	}
	if len(cmds) == 0 {
		t.Fatalf("no commands in help:\n%s", out)
	}
	for _, c := range cmds {
		code, _, stderr := runCLI(t, c, "--help")
		if code != 0 {
			t.Errorf("%s --help: exit %d: %s", c, code, stderr)
		}
	}
	if !strings.Contains(out, "NXMESH_LOG_LEVEL") {
		t.Errorf("help does not mention the NXMESH_ environment variables:\n%s", out)
	}
}

func TestEnvironmentSetsFlags(t *testing.T) {
	t.Setenv("NXMESH_LOG_LEVEL", "not-a-level")
	code, _, stderr := runCLI(t, "version")
	if code != 2 || !strings.Contains(stderr, "NXMESH_LOG_LEVEL") {
		t.Fatalf("exit %d, stderr %q: want a usage error naming NXMESH_LOG_LEVEL", code, stderr)
	}
	t.Setenv("NXMESH_LOG_LEVEL", "debug")
	if code, _, stderr := runCLI(t, "version"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

func TestUnknownCommand(t *testing.T) {
	code, _, stderr := runCLI(t, "frobnicate")
	if code != 2 || !strings.Contains(stderr, "frobnicate") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
