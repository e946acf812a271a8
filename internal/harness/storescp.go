package harness

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"time"
)

// StoreSCP is a running dcmtk storescp.
type StoreSCP struct {
	*Process
	Port int
	Dir  string // its output directory (-od)
}

// Addr is the loopback address it listens on.
func (s *StoreSCP) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// StartStoreSCP runs `storescp -od dir args... PORT` on a free loopback
// port and waits until it listens. args are storescp's options: the
// benchmark's baseline passes -dhl (no reverse DNS lookup per
// association), the conformance reference SCP -aet, +B (bit-preserving)
// and an -xf profile. storescp keeps no state worth a clean shutdown: stop
// it with Kill.
//
// storescp cannot report the port it bound, so it gets one that was free a
// moment ago, and another if it exits at once (the port was taken
// meanwhile).
func StartStoreSCP(dir string, args ...string) (*StoreSCP, error) {
	for attempt := 1; ; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		full := append(append([]string{"-od", dir}, args...), strconv.Itoa(port))
		p, err := StartProcess(exec.Command("storescp", full...), nil)
		if err != nil {
			return nil, fmt.Errorf("starting storescp: %w", err)
		}
		s := &StoreSCP{Process: p, Port: port, Dir: dir}
		err = WaitListening(s.Addr(), 10*time.Second, s.Exited())
		if err == nil {
			return s, nil
		}
		s.Kill()
		if attempt == 4 {
			return nil, fmt.Errorf("storescp %v: %w (%v)\n%s", full, err, s.Err(), Tail(s.Output(), 4000))
		}
	}
}
