package main

import (
	"regexp"
	"strings"
	"testing"
)

func TestRollback(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)
	first, _ := applyFixture(t)

	code, out, stderr := runCLI(t, "rollback", first)
	if code != 0 {
		t.Fatalf("rollback: exit %d:\n%s\n%s", code, out, stderr)
	}
	m := regexp.MustCompile(`\nrolled back to revision ` + first + ` as revision (\d+)\n`).FindStringSubmatch(out)
	if m == nil || !strings.HasPrefix(out, "~ Upstream api (changed)\n") ||
		!strings.Contains(out, "    -    - address: 127.0.0.1:9001\n    +    - address: 127.0.0.1:9000\n") {
		t.Fatalf("rollback output:\n%s", out)
	}
	if !strings.Contains(out, "revision "+m[1]+": workspace default has no agents yet") {
		t.Errorf("rollback did not follow the new revision:\n%s\n%s", out, stderr)
	}
	if code, out, _ := runCLI(t, "get", "upstream", "api"); code != 0 || !strings.Contains(out, "127.0.0.1:9000") {
		t.Errorf("after rollback: exit %d:\n%s", code, out)
	}
}
