package bench

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestMachineHere(t *testing.T) {
	m := CollectMachine("v1.2.3")
	if m.CPUs <= 0 {
		t.Errorf("CPUs = %d, want > 0", m.CPUs)
	}
	if runtime.GOOS == "linux" && m.MemoryMiB <= 0 {
		t.Errorf("MemoryMiB = %d, want > 0 on linux", m.MemoryMiB)
	}
	if m.NoFile == 0 {
		t.Error("NoFile = 0, want the RLIMIT_NOFILE soft limit")
	}
	if m.Version != "v1.2.3" || m.GoVersion != runtime.Version() {
		t.Errorf("Version, GoVersion = %q, %q", m.Version, m.GoVersion)
	}
	if m.OS != runtime.GOOS || m.Arch != runtime.GOARCH {
		t.Errorf("OS/Arch = %s/%s", m.OS, m.Arch)
	}
}

func TestMachineProcFiles(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		cpuModel  string
		memoryMiB int64
	}{
		{
			name: "x86",
			files: map[string]string{
				"cpuinfo": "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n",
				"meminfo": "MemTotal:       16318148 kB\nMemFree:         1234567 kB\n",
			},
			cpuModel:  "Intel(R) Xeon(R) CPU @ 2.20GHz",
			memoryMiB: 15935,
		},
		{
			name:  "no proc files",
			files: map[string]string{},
		},
		{
			name: "no model name, odd meminfo",
			files: map[string]string{
				"cpuinfo": "processor\t: 0\nBogoMIPS\t: 50.00\n",
				"meminfo": "MemTotal: lots\n",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m := collectMachine(dir, "dev")
			if m.CPUModel != tc.cpuModel {
				t.Errorf("CPUModel = %q, want %q", m.CPUModel, tc.cpuModel)
			}
			if m.MemoryMiB != tc.memoryMiB {
				t.Errorf("MemoryMiB = %d, want %d", m.MemoryMiB, tc.memoryMiB)
			}
			if m.CPUs <= 0 {
				t.Errorf("CPUs = %d without proc files, want runtime.NumCPU", m.CPUs)
			}
		})
	}
}
