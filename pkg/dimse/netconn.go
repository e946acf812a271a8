package dimse

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

// isTemporary reports accept errors that pass: out of file descriptors, or
// a connection aborted before it was accepted.
func isTemporary(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}

// ackConn is the connection as the association reads it: before each read
// it asks the kernel to acknowledge promptly (see quickAck).
//
// Why: dcmtk's storescu writes each PDU header and its body in separate
// small writes. With Nagle's algorithm on the sender and delayed ACKs on the
// receiver, the body waits for the ACK of the header, about 40 ms per
// C-STORE. Acknowledging at once removes the stall.
type ackConn struct {
	net.Conn
	raw syscall.RawConn // nil when the connection has no socket (tests)

	// armed: the next bytes read start a PDU; started is then called (to
	// put a deadline on the rest of it) and inPDU set.
	armed   bool
	inPDU   bool
	started func()
	read    int64 // bytes read so far: 0 for a bare connect-and-close
}

func newAckConn(c net.Conn) *ackConn {
	a := &ackConn{Conn: c}
	// Through TLS, the acknowledgements are still the socket's.
	sock := c
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		sock = tc.NetConn()
	}
	if sc, ok := sock.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			a.raw = raw
		}
	}
	return a
}

func (c *ackConn) Read(p []byte) (int, error) {
	if c.raw != nil {
		quickAck(c.raw)
	}
	n, err := c.Conn.Read(p)
	c.read += int64(n)
	if n > 0 && c.armed {
		c.armed, c.inPDU = false, true
		if c.started != nil {
			c.started()
		}
	}
	return n, err
}

// NewTLSListener is tls.NewListener, except that the server can tell how
// many bytes arrived beneath TLS: a connection closed, reset or left
// silent before its first byte (a load balancer's or Kubernetes' TCP
// check) made no handshake at all, so it is logged at DEBUG, as on the
// plaintext port, and not counted as a failed handshake. Serve TLS ports
// from this listener; with tls.NewListener every such check is a failure.
func NewTLSListener(inner net.Listener, config *tls.Config) net.Listener {
	return &tlsListener{Listener: inner, config: config}
}

type tlsListener struct {
	net.Listener
	config *tls.Config
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(&countConn{Conn: c}, l.config), nil
}

// countConn counts the bytes read from the connection beneath TLS. Only
// the association's goroutine reads (the handshake, then the records).
type countConn struct {
	net.Conn
	read int64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read += int64(n)
	return n, err
}

// SyscallConn lets ackConn reach the socket through the wrapper.
func (c *countConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.New("dimse: no socket beneath the connection")
}
