package route

import (
	"net"
	"net/netip"
	"strings"

	"github.com/dicomgw/dicomgw/pkg/dict"
)

// PeerAddr returns the IP address of a connection's remote address
// (net.Conn.RemoteAddr().String(), "host:port") as the peer key has it:
// without the port, an IPv6 address without brackets and without a zone
// ("fe80::1%eth0" becomes "fe80::1"), an IPv4-mapped IPv6 address as IPv4
// ("[::ffff:10.0.0.1]:104" becomes "10.0.0.1"), in canonical form (IPv6
// compressed and lower-case). It returns "" when remoteAddr holds no IP
// address, as for a Unix socket.
func PeerAddr(remoteAddr string) string {
	host := remoteAddr
	if h, _, err := net.SplitHostPort(remoteAddr); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return ""
	}
	return a.Unmap().WithZone("").String()
}

// Object is the Facts of one received object.
type Object struct {
	// CalledAE and CallingAE are the association's AE titles without their
	// padding (pdu.AE.String).
	CalledAE, CallingAE string
	// Peer is the sender's address as PeerAddr gives it.
	Peer string
	// Values are the header values the walk collected for Table.Tags
	// (dcmhead.Summary.Values).
	Values map[uint32]string
}

// Get returns the value of key for the object: an AE title, the peer's
// address or a header value by its DICOM keyword; "" when absent.
func (o Object) Get(key string) string {
	switch key {
	case KeyCalledAE:
		return o.CalledAE
	case KeyCallingAE:
		return o.CallingAE
	case KeyPeer:
		return o.Peer
	}
	if e, ok := dict.ByKeyword(key); ok {
		return o.Values[e.Tag]
	}
	return ""
}
