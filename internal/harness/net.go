package harness

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago, for
// peers (such as dcmtk's storescp) that cannot report the port they bound.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// errExited is what WaitListening returns when the process that should
// listen has ended.
var errExited = errors.New("exited before listening")

// WaitListening polls addr until it accepts a TCP connection, exited is
// closed (the process that should listen has ended; nil: not watched), or
// timeout passes.
func WaitListening(addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s after %v: %w", addr, timeout, err)
		}
		select {
		case <-exited:
			return errExited
		case <-time.After(20 * time.Millisecond):
		}
	}
}
