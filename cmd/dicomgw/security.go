package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/dicomgw/dicomgw/pkg/auth"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// aeadSuites are the TLS 1.2 cipher suites of the BCP 195 profiles that
// PS3.15 B.13 points to: ECDHE key exchange and AEAD ciphers only. TLS 1.3
// suites are all AEAD and not configurable.
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// serverTLS builds the DICOM TLS configuration (PS3.15 B.12/B.13): TLS 1.2
// at least (1.3 preferred: Go negotiates the highest both speak), AEAD
// suites, and client certificates required and verified when a client CA
// is given.
func serverTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("--tls-listen needs --tls-cert and --tls-key")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		CipherSuites: aeadSuites,
	}
	if clientCAFile != "" {
		pool, err := certPool(clientCAFile, false)
		if err != nil {
			return nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// certPool reads PEM certificates, onto the system's roots if withSystem.
func certPool(file string, withSystem bool) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if withSystem {
		if sys, err := x509.SystemCertPool(); err == nil {
			pool = sys
		}
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// tlsSwitch hands each new TLS connection the configuration in force, so
// that a certificate replaced on disk is taken on SIGHUP without dropping
// running associations.
type tlsSwitch struct{ cur atomic.Pointer[tls.Config] }

func (s *tlsSwitch) listenerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load(), nil
		},
	}
}

// identities checks user identities for the DIMSE server with the
// authenticator in force (replaced on SIGHUP).
type identities struct {
	cur     atomic.Pointer[auth.Authenticator]
	require bool
}

func (c *identities) Authenticate(_ context.Context, id *dimse.Identity) ([]byte, error) {
	a := c.cur.Load()
	u := id.User
	switch u.Type {
	case pdu.UserIdentityUsernamePasscode:
		return nil, a.Passcode(u.Primary, u.Secondary, id.TLS)
	case pdu.UserIdentityJWT:
		_, err := a.JWT(u.Primary, id.TLS)
		return nil, err
	}
	// A username alone proves nothing; Kerberos and SAML are not
	// supported. Ignored (PS3.7 D.3.3.7 lets an acceptor) unless an
	// identity is required.
	if c.require {
		return nil, &auth.Error{Reason: "unsupported-type", Err: fmt.Errorf("user identity type %v cannot be checked here", u.Type)}
	}
	return nil, nil
}

// authConfig is the auth.Config the flags describe; nil when user
// identities are not checked at all.
func (c serveConfig) authConfig() *auth.Config {
	if c.usersFile == "" && c.jwtJWKSFile == "" {
		return nil
	}
	ac := &auth.Config{UsersFile: c.usersFile}
	if c.jwtJWKSFile != "" || c.jwtIssuer != "" || c.jwtAudience != "" {
		ac.JWT = &auth.JWTConfig{Issuer: c.jwtIssuer, Audience: c.jwtAudience, JWKSFile: c.jwtJWKSFile, Algorithms: c.jwtAlgorithms}
	}
	return ac
}
