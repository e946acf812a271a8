//go:build !linux

package harness

import (
	"os"
	"syscall"
)

// childAttrs: only Linux can tie a child's life to its parent's.
func childAttrs() *syscall.SysProcAttr { return nil }

// maxRSS is unknown off Linux (units and types differ).
func maxRSS(*os.ProcessState) int64 { return 0 }
