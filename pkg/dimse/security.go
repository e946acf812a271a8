package dimse

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
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
