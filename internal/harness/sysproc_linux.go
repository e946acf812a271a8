package harness

import (
	"os"
	"syscall"
)

// childAttrs has the kernel kill a child when this process dies, however
// it dies (prctl PR_SET_PDEATHSIG), so that a killed test or benchmark
// leaves no gateway or storescp behind.
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// maxRSS is the peak resident set of an ended child, in bytes, from its
// rusage (Linux counts ru_maxrss in KiB).
func maxRSS(ps *os.ProcessState) int64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss << 10
	}
	return 0
}
