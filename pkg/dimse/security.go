package dimse

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// Identity is who is at the other end of an association, as far as the
// gateway can tell: the transport's word (TLS client certificate) and the
// user identity the peer negotiated (PS3.7 D.3.3.7).
type Identity struct {
	CallingAE, CalledAE string
	RemoteAddr          string
	TLS                 bool
	// PeerCertificate is the verified client certificate on a TLS port
	// that asks for one; nil otherwise.
	PeerCertificate *x509.Certificate
	// User is the user identity sub-item of the A-ASSOCIATE-RQ; nil when
	// there was none.
	User *pdu.UserIdentityRQ
}

// Authenticator checks a negotiated user identity. It returns the server
// response to send when the peer asks for a positive response (PS3.7
// D.3.3.7.2), or an error to refuse the association. The error goes to the
// log and the metrics, never on the wire.
type Authenticator interface {
	Authenticate(ctx context.Context, id *Identity) (response []byte, err error)
}

// ErrNoIdentity is wrapped when a user identity is required and the peer
// did not send one (or sent a type that cannot be checked).
var ErrNoIdentity = errors.New("missing: no user identity")

// handshake runs the TLS handshake of a TLS connection, bounded by ARTIM
// (the peer has that long to begin the association), and keeps the verified
// client certificate. A failed handshake ends the connection: there is no
// DICOM peer to abort.
func (a *assoc) handshake() error {
	tc, ok := a.conn.(*tls.Conn)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.srv.cfg.ARTIMTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return err
	}
	st := tc.ConnectionState()
	a.tls = true
	if len(st.VerifiedChains) > 0 && len(st.PeerCertificates) > 0 {
		a.peerCert = st.PeerCertificates[0]
	}
	return nil
}

// handshakeFailed records how a TLS connection ended before its handshake
// completed. A peer that sent not a byte attempted no handshake: a load
// balancer's or Kubernetes' TCP check (connect, then close or reset), or a
// connection silent until ARTIM. Those end as on the plaintext port (logged
// at DEBUG) and are not counted as failed handshakes; so is a handshake cut
// short by shutdown. Anything else is a failure, counted and logged.
func (a *assoc) handshakeFailed(err error) {
	a.mu.Lock()
	closing := a.closing
	a.mu.Unlock()
	silent := false
	if tc, ok := a.conn.(*tls.Conn); ok {
		// Unknown (not from NewTLSListener): counted as a failure.
		cc, ok := tc.NetConn().(*countConn)
		silent = ok && cc.read == 0
	}
	switch {
	case closing:
		a.end = EndShutdown
	case silent && isTimeout(err):
		a.end = EndARTIMExpired
	case silent:
		a.bare = true
		a.end, a.endDetail = EndConnectionLost, "closed before sending anything: "+errDetail(err)
	default:
		a.srv.m.tlsFailures.Inc()
		a.log.Warn("TLS handshake failed", "err", err)
		a.end, a.endDetail = EndConnectionLost, "TLS handshake failed: "+err.Error()
	}
}

// isTimeout reports a handshake or read that ran out of time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// certMatches reports whether a client certificate names subject: its
// subject common name, or one of its DNS names (compared without case,
// as host names are).
func certMatches(cert *x509.Certificate, subject string) bool {
	if cert == nil {
		return false
	}
	if strings.EqualFold(cert.Subject.CommonName, subject) {
		return true
	}
	for _, n := range cert.DNSNames {
		if strings.EqualFold(n, subject) {
			return true
		}
	}
	return false
}

// authenticate applies the user identity policy to a request (PS3.7
// D.3.3.7): a user identity, when present, must check out; when one is
// required it must be present. The user identity AC sub-item is returned
// when the peer asked for a positive response.
func (a *assoc) authenticate(rq *pdu.AssociateRQ) (*pdu.UserIdentityAC, error) {
	cfg := &a.srv.cfg
	uid := rq.UserInfo.UserIdentityRQ
	if uid == nil {
		if cfg.RequireUserIdentity {
			return nil, ErrNoIdentity
		}
		return nil, nil
	}
	if cfg.Authenticator == nil {
		if cfg.RequireUserIdentity {
			return nil, fmt.Errorf("%w: no way to check one is configured", ErrNoIdentity)
		}
		return nil, nil // PS3.7 D.3.3.7: an acceptor may ignore it
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cfg.Authenticator.Authenticate(ctx, &Identity{
		CallingAE: a.calling, CalledAE: a.called, RemoteAddr: a.conn.RemoteAddr().String(),
		TLS: a.tls, PeerCertificate: a.peerCert, User: uid,
	})
	if err != nil {
		return nil, err
	}
	if !uid.PositiveResponseRequested {
		return nil, nil
	}
	return &pdu.UserIdentityAC{ServerResponse: resp}, nil
}
