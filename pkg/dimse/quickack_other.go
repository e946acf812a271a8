//go:build !linux

package dimse

import "syscall"

// quickAck does nothing where TCP_QUICKACK does not exist.
func quickAck(syscall.RawConn) {}
