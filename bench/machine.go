package bench

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// CollectMachine describes this host for the report, so that figures from
// two runs are compared knowing what each ran on. version is the nxmesh
// version. What the host does not tell (no /proc, an unknown CPU) is left
// empty: a report without a CPU model beats no report.
func CollectMachine(version string) Machine {
	return collectMachine("/proc", version)
}

// collectMachine reads the host's facts with proc as the procfs root.
func collectMachine(proc, version string) Machine {
	m := Machine{
		OS:        runtime.GOOS,
		Arch:      runtime.GOARCH,
		CPUs:      runtime.NumCPU(),
		GoVersion: runtime.Version(),
		Version:   version,
		CPUModel:  procField(filepath.Join(proc, "cpuinfo"), "model name"),
		MemoryMiB: memTotalMiB(filepath.Join(proc, "meminfo")),
		NoFile:    noFileLimit(),
	}
	m.Hostname, _ = os.Hostname()
	return m
}

// memTotalMiB is MemTotal from a meminfo file ("MemTotal: 16318148 kB"),
// or 0 when it cannot be read.
func memTotalMiB(path string) int64 {
	fields := strings.Fields(procField(path, "MemTotal"))
	if len(fields) != 2 || fields[1] != "kB" {
		return 0
	}
	kb, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		return 0
	}
	return kb / 1024
}

// procField is the value of the first "key: value" line of a /proc file
// whose key is key, or "" when the file or the key is missing.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// noFileLimit is the soft RLIMIT_NOFILE in effect, which caps how many
// agents one bench process can hold; 0 when it cannot be read.
func noFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return lim.Cur
}
