package dimse

import "syscall"

// quickAck turns on TCP_QUICKACK. Linux clears it again by itself after a
// while (tcp(7): "not permanent"), so it is re-armed before every read.
func quickAck(raw syscall.RawConn) {
	_ = raw.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}
