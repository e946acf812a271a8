// Package dimse runs DICOM associations over the upper layer codec of
// package pdu: the acceptor's protocol machine of PS3.8 9.2 (Table 9-10, as
// data in statemachine.go), association negotiation, DIMSE command sets and
// the C-ECHO and C-STORE services of PS3.4. It also has a small requestor
// (Dial) for `dicomgw echo`, tests and later DIMSE destinations.
//
// One goroutine owns each association: it reads PDUs with a deadline for
// the state it is in, feeds them to the state machine, and streams C-STORE
// data set fragments to a StoreHandler as they arrive, so that no object is
// ever held in memory.
package dimse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// Config tunes a Server. Zero durations and limits take the defaults below.
type Config struct {
	// AETitles are the called AE titles this server answers to (PS3.8
	// 9.3.2, compared without padding). A request to any other gets
	// A-ASSOCIATE-RJ 1/1/7. Must not be empty.
	AETitles []string
	// CallingAEs is the allowlist of senders; empty means anyone. A
	// calling AE not on it gets A-ASSOCIATE-RJ 1/1/3. AETitles and
	// CallingAEs can be replaced later with SetPolicy.
	CallingAEs []CallingAE
	// AcceptUnknownSOPClasses accepts presentation contexts whose abstract
	// syntax is a well-formed UID that is not in the registry (private or
	// newer storage SOP classes) as storage.
	AcceptUnknownSOPClasses bool
	// MaxAssociations bounds simultaneous associations; above it, requests
	// get A-ASSOCIATE-RJ 2/3/2 (transient, local limit exceeded).
	MaxAssociations int
	// MaxAssociationsPerHost bounds the associations from one peer address,
	// so that one noisy sender cannot take every slot (RJ 2/3/2 too);
	// 0: no limit beyond MaxAssociations.
	MaxAssociationsPerHost int
	// MaxConnections bounds open TCP connections of any kind (associations,
	// connections still to send their A-ASSOCIATE-RQ, rejected ones waiting
	// to close); beyond it a new connection is closed at once. 0 means
	// 4 × MaxAssociations + 64.
	MaxConnections int
	// MaxConnectionsPerHost bounds the open TCP connections from one peer
	// address, counted from accept, before anything is read: one host
	// holding idle connections cannot take every one of MaxConnections,
	// and the others keep room. 0 means a quarter of MaxConnections, but
	// at least MaxAssociations + 16, so that a sender can always use every
	// association and still hear A-ASSOCIATE-RJ 2/3/2 beyond them, and at
	// most half of MaxConnections, so that the others keep at least half.
	// Set, it must be less than MaxConnections (unless that is 1).
	MaxConnectionsPerHost int
	// Admit, if set, is asked before an association is accepted; an error
	// refuses it with A-ASSOCIATE-RJ 2/3/1 (transient, temporary
	// congestion): the spool is full, come back later.
	Admit func() error
	// Authenticator checks negotiated user identities (sub-item 58); a
	// failure is A-ASSOCIATE-RJ 1/1/1, the reason logged, never sent.
	Authenticator Authenticator
	// RequireUserIdentity refuses associations that do not negotiate a
	// user identity the Authenticator accepts.
	RequireUserIdentity bool
	// MaxPDULength is the maximum length we advertise (PS3.8 D.1) and
	// enforce on received P-DATA-TF PDUs.
	MaxPDULength uint32
	// ARTIMTimeout bounds Sta2 (waiting for the A-ASSOCIATE-RQ) and Sta13
	// (waiting for the peer to close) (PS3.8 9.1.5).
	ARTIMTimeout time.Duration
	// IdleTimeout bounds how long Sta6 waits for the next PDU.
	IdleTimeout time.Duration
	// PDUTimeout bounds how long a PDU may take to arrive once its first
	// bytes have: a peer that trickles bytes (slowloris) cannot hold an
	// association by sending one byte per IdleTimeout.
	PDUTimeout time.Duration
	// WriteTimeout bounds each write to the peer.
	WriteTimeout time.Duration
	// Commitment, if set, serves the Storage Commitment Push Model SOP
	// Class (N-ACTION requests; the reports are its business); nil: the
	// SOP class is not accepted.
	Commitment CommitmentHandler
	// Find, if set, answers C-FIND in the Patient and Study Root
	// Query/Retrieve Information Models; nil: they are not accepted.
	Find FindHandler
	// Move, if set, answers C-MOVE in the Patient and Study Root models.
	Move MoveHandler
	// Ended, if set, is told of each association as it ends (rejected
	// ones included; connections that closed, timed out or were shut down
	// without a word, such as TCP health checks, are not). It is called on the
	// association's goroutine and must not block.
	Ended func(Summary)
	// MaxFindIdentifier bounds a C-FIND or C-MOVE identifier (0:
	// DefaultMaxFindIdentifier); a longer one is answered Unable to process.
	MaxFindIdentifier int
	// MaxCommitmentRequest bounds an N-ACTION data set, which is held in
	// memory (0: DefaultMaxCommitmentRequest); a longer one is answered
	// Resource limitation.
	MaxCommitmentRequest int
	// UIDPolicy decides which Affected SOP Class and Instance UIDs a
	// C-STORE-RQ may carry (the rest get C000); the zero value is
	// uid.Lenient. The handler applies the same policy to the data set.
	UIDPolicy uid.Policy

	ImplementationClassUID    string
	ImplementationVersionName string
}

// Defaults.
const (
	DefaultMaxAssociations = 64
	DefaultMaxPDULength    = 256 << 10
	DefaultARTIMTimeout    = 30 * time.Second
	DefaultIdleTimeout     = 5 * time.Minute
	DefaultPDUTimeout      = time.Minute
	DefaultWriteTimeout    = 30 * time.Second

	// ImplementationClassUID identifies dicomgw (PS3.7 D.3.3.2). It is a
	// UUID-derived UID (PS3.5 B.2), so it needs no registered root.
	ImplementationClassUID = "2.25.239704632914683374061386702418733412621"
)

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.MaxAssociations <= 0 {
		out.MaxAssociations = DefaultMaxAssociations
	}
	if out.MaxAssociationsPerHost < 0 {
		out.MaxAssociationsPerHost = 0
	}
	if out.MaxConnections <= 0 {
		out.MaxConnections = 4*out.MaxAssociations + 64
	}
	switch {
	case out.MaxConnectionsPerHost <= 0:
		// A default never lets one host take more than half: a lower
		// --max-connections scales it down.
		out.MaxConnectionsPerHost = max(1, min(max(out.MaxConnections/4, out.MaxAssociations+16), out.MaxConnections/2))
	case out.MaxConnectionsPerHost >= out.MaxConnections && out.MaxConnections > 1:
		return out, fmt.Errorf("dimse: %d connections per host (--max-connections-per-host) would let one host take all %d connections (--max-connections): "+
			"set it lower, or --max-connections higher, so that the other hosts keep room",
			out.MaxConnectionsPerHost, out.MaxConnections)
	}
	if out.MaxFindIdentifier <= 0 {
		out.MaxFindIdentifier = DefaultMaxFindIdentifier
	}
	if out.MaxCommitmentRequest <= 0 {
		out.MaxCommitmentRequest = DefaultMaxCommitmentRequest
	}
	if out.PDUTimeout <= 0 {
		out.PDUTimeout = DefaultPDUTimeout
	}
	if out.MaxPDULength == 0 {
		out.MaxPDULength = DefaultMaxPDULength
	}
	if out.MaxPDULength < 4096 {
		return out, fmt.Errorf("dimse: max PDU length %d is below 4096", out.MaxPDULength)
	}
	if out.ARTIMTimeout <= 0 {
		out.ARTIMTimeout = DefaultARTIMTimeout
	}
	if out.IdleTimeout <= 0 {
		out.IdleTimeout = DefaultIdleTimeout
	}
	if out.WriteTimeout <= 0 {
		out.WriteTimeout = DefaultWriteTimeout
	}
	if out.ImplementationClassUID == "" {
		out.ImplementationClassUID = ImplementationClassUID
	}
	if err := uid.Valid(out.ImplementationClassUID); err != nil {
		return out, fmt.Errorf("dimse: implementation class UID: %w", err)
	}
	if out.UIDPolicy != uid.Lenient && out.UIDPolicy != uid.Strict {
		return out, fmt.Errorf("dimse: unknown UID policy %v", out.UIDPolicy)
	}
	if out.ImplementationVersionName == "" {
		out.ImplementationVersionName = "DICOMGW"
	}
	if n := len(out.ImplementationVersionName); n > 16 {
		return out, fmt.Errorf("dimse: implementation version name %q is %d characters, at most 16", out.ImplementationVersionName, n)
	}
	return out, nil
}

// ValidAETitle checks an AE title against PS3.5 6.2 (AE): 1 to 16
// characters of the default repertoire, no backslash or control characters,
// not only spaces.
func ValidAETitle(ae string) error {
	if len(ae) == 0 || len(ae) > 16 {
		return fmt.Errorf("dimse: AE title %q must be 1 to 16 characters", ae)
	}
	blank := true
	for i := 0; i < len(ae); i++ {
		c := ae[i]
		if c < 0x20 || c >= 0x7F || c == '\\' {
			return fmt.Errorf("dimse: AE title %q has a character not allowed in an AE title at offset %d", ae, i)
		}
		if c != ' ' {
			blank = false
		}
	}
	if blank {
		return fmt.Errorf("dimse: AE title %q is only spaces", ae)
	}
	return nil
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("dimse: server closed")

// Server accepts associations and serves C-ECHO and C-STORE.
type Server struct {
	cfg     Config
	handler StoreHandler
	log     *slog.Logger
	pool    *pdu.Pool
	policy  atomic.Pointer[policy]
	m       *metrics

	slots   atomic.Int64 // associations holding a slot (accepted, or being negotiated)
	hostsMu sync.Mutex
	hosts   map[netip.Addr]int // slots held per peer address

	mu             sync.Mutex
	closing        bool
	listeners      map[net.Listener]struct{}
	assocs         map[*assoc]struct{}
	conns          map[netip.Addr]int       // open connections per peer address
	hostFullLogged map[netip.Addr]time.Time // when "too many connections from one host" was last logged
	wg             sync.WaitGroup
}

// NewServer returns a Server that hands C-STORE data sets to h. Its metrics
// are registered with reg (nil: not exported).
func NewServer(cfg Config, h StoreHandler, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("dimse: nil StoreHandler")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: c, handler: h, log: log,
		pool:           pdu.NewPool(c.MaxPDULength),
		listeners:      make(map[net.Listener]struct{}),
		assocs:         make(map[*assoc]struct{}),
		hosts:          make(map[netip.Addr]int),
		conns:          make(map[netip.Addr]int),
		hostFullLogged: make(map[netip.Addr]time.Time),
		m:              newMetrics(reg),
	}
	if err := s.SetPolicy(Policy{AETitles: c.AETitles, CallingAEs: c.CallingAEs}); err != nil {
		return nil, err
	}
	return s, nil
}

// Serve accepts connections on ln until Shutdown, each served by its own
// goroutine. It returns ErrServerClosed after Shutdown, or the listener's
// error if it fails for good. Temporary accept errors (such as running out
// of file descriptors) are retried with backoff, never spun on.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()

	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		a := newAssoc(s, conn)
		switch s.track(a) {
		case trackClosed:
			conn.Close()
			return ErrServerClosed
		case trackFull:
			s.m.refused.WithLabelValues("total").Inc()
			s.log.Warn("too many connections: closed a new one at once", "peer", conn.RemoteAddr().String(), "max_connections", s.cfg.MaxConnections)
			conn.Close()
			continue
		case trackHostFull:
			s.m.refused.WithLabelValues("per_host").Inc()
			s.logHostFull(a.peerAddr())
			conn.Close()
			continue
		}
		go a.serve()
	}
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

type trackResult uint8

const (
	tracked trackResult = iota
	trackClosed
	trackFull     // MaxConnections
	trackHostFull // MaxConnectionsPerHost
)

// track counts a new connection against the limits, or says which one it
// would pass.
func (s *Server) track(a *assoc) trackResult {
	addr := a.peerAddr()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return trackClosed
	}
	if len(s.assocs) >= s.cfg.MaxConnections {
		return trackFull
	}
	if s.conns[addr] >= s.cfg.MaxConnectionsPerHost {
		return trackHostFull
	}
	s.assocs[a] = struct{}{}
	s.conns[addr]++
	s.wg.Add(1)
	return tracked
}

func (s *Server) untrack(a *assoc) {
	addr := a.peerAddr()
	s.mu.Lock()
	delete(s.assocs, a)
	if s.conns[addr]--; s.conns[addr] <= 0 {
		delete(s.conns, addr) // the map holds only hosts with connections open
	}
	s.mu.Unlock()
	s.wg.Done()
}

// logHostFull says, once a minute per host at most, that a host holds all
// the connections it may (a flood logs one line, not thousands).
func (s *Server) logHostFull(addr netip.Addr) {
	now := time.Now()
	s.mu.Lock()
	last, seen := s.hostFullLogged[addr]
	if !seen || now.Sub(last) >= time.Minute {
		s.hostFullLogged[addr] = now
		for a, t := range s.hostFullLogged {
			if now.Sub(t) >= time.Minute {
				delete(s.hostFullLogged, a)
			}
		}
	}
	s.mu.Unlock()
	if !seen || now.Sub(last) >= time.Minute {
		s.log.Warn("too many connections from one host: closing its new ones at once (logged once a minute)", "peer", addr.String(),
			"max_connections_per_host", s.cfg.MaxConnectionsPerHost)
	}
}

// Shutdown stops accepting, lets running associations end by themselves
// until ctx is done, then aborts the rest (A-ABORT, partial objects
// discarded) and waits for their goroutines. It returns ctx.Err() if it had
// to abort any.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for a := range s.assocs {
		a.abortForShutdown()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// ActiveAssociations is the number of connections being served.
func (s *Server) ActiveAssociations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.assocs)
}

// acquireSlot reserves one of MaxAssociations.
func (s *Server) acquireSlot() bool {
	for {
		n := s.slots.Load()
		if n >= int64(s.cfg.MaxAssociations) {
			return false
		}
		if s.slots.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (s *Server) releaseSlot() { s.slots.Add(-1) }

// acquireHost reserves a slot of the per-host limit for addr.
func (s *Server) acquireHost(addr netip.Addr) bool {
	if s.cfg.MaxAssociationsPerHost <= 0 {
		return true
	}
	s.hostsMu.Lock()
	defer s.hostsMu.Unlock()
	if s.hosts[addr] >= s.cfg.MaxAssociationsPerHost {
		return false
	}
	s.hosts[addr]++
	return true
}

func (s *Server) releaseHost(addr netip.Addr) {
	if s.cfg.MaxAssociationsPerHost <= 0 {
		return
	}
	s.hostsMu.Lock()
	defer s.hostsMu.Unlock()
	if s.hosts[addr]--; s.hosts[addr] <= 0 {
		delete(s.hosts, addr)
	}
}

// CheckConfig reports what is wrong with cfg, as NewServer would, without
// building a server.
func CheckConfig(cfg Config) error {
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	_, err = compile(Policy{AETitles: c.AETitles, CallingAEs: c.CallingAEs})
	return err
}
