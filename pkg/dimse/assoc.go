package dimse

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// EndReason says how an association ended. It is a closed set, fit for a
// log field and a bounded metric label.
type EndReason uint8

// End reasons.
const (
	EndReleased       EndReason = iota + 1 // A-RELEASE, the normal end
	EndRejected                            // we sent A-ASSOCIATE-RJ
	EndPeerAborted                         // the peer sent A-ABORT
	EndProtocolError                       // we aborted: the peer broke the protocol
	EndIdleTimeout                         // we aborted: nothing arrived for IdleTimeout
	EndShutdown                            // we aborted: server shutdown
	EndARTIMExpired                        // no A-ASSOCIATE-RQ, or no close after RJ/RP/abort, within ARTIMTimeout
	EndConnectionLost                      // the transport closed or failed without A-RELEASE/A-ABORT
)

func (r EndReason) String() string {
	switch r {
	case EndReleased:
		return "released"
	case EndRejected:
		return "rejected"
	case EndPeerAborted:
		return "peer-aborted"
	case EndProtocolError:
		return "protocol-error"
	case EndIdleTimeout:
		return "idle-timeout"
	case EndShutdown:
		return "shutdown"
	case EndARTIMExpired:
		return "artim-expired"
	case EndConnectionLost:
		return "connection-lost"
	}
	return "other"
}

// levelTrace logs every state transition; below Debug so that it is
// asked for on purpose.
const levelTrace = slog.LevelDebug - 4

// evInfo carries what came with an event: the PDU received, or the error
// behind an Evt19 and the abort reason it calls for.
type evInfo struct {
	p      pdu.PDU
	raw    []byte // Evt9: the encoded P-DATA-TF PDU(s) to send
	after  func() // Evt9: runs once raw is written
	err    error
	reason pdu.AbortReason
}

// assoc is one association, acceptor side. Only its own goroutine (serve)
// touches its fields, except mu-guarded closing and the read deadline.
type assoc struct {
	srv  *Server
	conn net.Conn
	addr netip.Addr // the peer's IP address
	bare bool       // the peer closed before sending a byte
	ac   *ackConn
	rd   *pdu.Reader
	log  *slog.Logger
	id   string

	state   State
	pending []pendingEvent // local events raised by actions, run before the next read
	artim   time.Time      // ARTIM deadline; zero when stopped
	broken  error          // a write failed: the transport is gone

	mu      sync.Mutex
	closing bool // shutdown asked us to abort

	start     time.Time
	end       EndReason
	endDetail string
	hasSlot   bool
	hasHost   bool
	accepted  bool
	// Who aborted and why, for the aborted metric ("" when not aborted).
	abortSource, abortReason string

	// Transport security (TLS ports).
	tls      bool
	peerCert *x509.Certificate

	// Negotiated.
	userAC          *pdu.UserIdentityAC // answer to the peer's user identity, if it asked
	calling, called string
	peerMax         uint32 // peer's maximum length; 0 = no limit
	ctxs            map[uint8]*presContext

	// DIMSE.
	msg     *message
	wbuf    []byte
	reports reports    // storage commitment reports sent on this association
	op      *runningOp // the query or retrieval being answered
	// stats are written by the association's goroutine and read by
	// Server.Active from others: atomic.
	stats struct {
		echoes, stores, failed atomic.Int64
		actions                atomic.Int64 // storage commitment requests
		finds, moves           atomic.Int64
		nonconforming          atomic.Int64 // objects stored with UIDs that break PS3.5 9.1
		bytes                  atomic.Int64
	}
	// live is what Server.Active shows of the association once it is
	// accepted (set once, read by others).
	live atomic.Pointer[Summary]
}

type pendingEvent struct {
	ev   Event
	info evInfo
}

func newAssoc(s *Server, conn net.Conn) *assoc {
	id := fmt.Sprintf("%08x", rand.Uint32())
	a := &assoc{
		srv:  s,
		conn: conn,
		addr: peerAddrOf(conn),
		id:   id,
		log:  s.log.With("assoc", id, "peer", conn.RemoteAddr().String()),
	}
	a.reports.waiting = make(map[uint16]chan *Command)
	a.reports.gone = make(chan struct{})
	a.ac = newAckConn(conn)
	a.ac.started = a.pduStarted
	a.rd = pdu.NewReader(a.ac, pdu.Limits{MaxPDataLength: s.cfg.MaxPDULength}, s.pool)
	return a
}

// serve runs the protocol machine from Sta1 until it is back in Sta1.
func (a *assoc) serve() {
	a.start = time.Now()
	defer a.srv.untrack(a)
	defer func() {
		if p := recover(); p != nil {
			// A bug must cost one association, not the gateway.
			a.log.Error("association panicked", "panic", p)
			a.end, a.endDetail = EndProtocolError, fmt.Sprint("internal error: ", p)
			a.teardown()
		}
	}()
	if err := a.handshake(); err != nil {
		// Not a DICOM peer yet: nothing to abort, only to close.
		a.handshakeFailed(err)
		a.teardown()
		return
	}
	a.state = Sta1
	a.dispatch(Evt5, evInfo{}) // transport connection indication
	for a.state != Sta1 {
		if len(a.pending) > 0 {
			pe := a.pending[0]
			a.pending = a.pending[1:]
			a.dispatch(pe.ev, pe.info)
			continue
		}
		ev, info := a.readEvent()
		a.dispatch(ev, info)
	}
	a.teardown()
}

// raise queues a local event (a primitive from our service user, or an
// error found while handling a PDU) to run before the next read.
func (a *assoc) raise(ev Event, info evInfo) {
	a.pending = append(a.pending, pendingEvent{ev, info})
}

// dispatch looks the event up in Table 9-10 and runs the action.
func (a *assoc) dispatch(ev Event, info evInfo) {
	act, ok := transition(a.state, ev)
	if !ok {
		// Only local events can land here, and ours never should: a bug.
		a.log.Error("no transition", "state", a.state, "event", ev)
		a.setEnd(EndProtocolError, fmt.Sprintf("internal error: %v in %v", ev, a.state))
		a.state = Sta1
		return
	}
	from := a.state
	a.state = a.run(act, ev, info)
	if from == Sta6 && a.state != Sta6 {
		a.closeReports()
	}
	if a.log.Enabled(context.Background(), levelTrace) {
		a.log.Log(context.Background(), levelTrace, "transition", "from", from, "event", ev, "action", act, "to", a.state)
	}
}

// run performs an action (PS3.8 Tables 9-6 to 9-9) and returns the next
// state. The requestor-only actions cannot be reached by the acceptor's
// events; run treats them as an internal error.
func (a *assoc) run(act Action, ev Event, info evInfo) State {
	switch act {
	case AE5:
		a.startARTIM()
		return Sta2
	case AE6:
		a.stopARTIM()
		return a.associateIndication(info.p.(*pdu.AssociateRQ))
	case AE7:
		a.send(info.p)
		a.accepted = true
		a.live.Store(&Summary{Start: a.start, CallingAE: a.calling, CalledAE: a.called, Peer: a.addr, TLS: a.tls})
		a.srv.m.active.Inc()
		a.openReports()
		return Sta6
	case AE8:
		a.send(info.p)
		a.startARTIM()
		return Sta13
	case DT1:
		a.sendRaw(info.raw)
		if info.after != nil && a.broken == nil {
			info.after()
		}
		return Sta6
	case DT2:
		a.pDataIndication(info.p.(*pdu.PDataTF))
		return Sta6
	case AR2:
		// Our service user answers a release at once; a message cut short
		// by it is dropped (its sender gets no response for it).
		a.dropMessage("association released mid-message")
		a.stopOp() // nothing of it after the A-RELEASE-RP
		a.raise(Evt14, evInfo{})
		return Sta8
	case AR4:
		a.send(&pdu.ReleaseRP{})
		a.setEnd(EndReleased, "")
		a.startARTIM()
		return Sta13
	case AR5:
		a.stopARTIM()
		return Sta1
	case AA1:
		// Local abort: idle timeout or shutdown (Evt15), or a PDU other than
		// A-ASSOCIATE-RQ in Sta2 (Evt3/4/10/12/13/19).
		a.dropMessage("association aborted")
		if ev != Evt15 {
			a.setEnd(EndProtocolError, describe(ev, info))
			a.aborted("local", abortLabel(reasonFor(ev, info)))
		} else {
			a.aborted("local", a.end.String())
		}
		a.send(&pdu.Abort{Source: pdu.AbortSourceUser})
		a.startARTIM()
		return Sta13
	case AA2:
		a.stopARTIM()
		if ev == Evt18 {
			a.setEnd(EndARTIMExpired, "")
		} else {
			a.setEnd(EndPeerAborted, abortDetail(info))
		}
		return Sta1
	case AA3:
		a.dropMessage("peer aborted")
		a.setEnd(EndPeerAborted, abortDetail(info))
		if ab, ok := info.p.(*pdu.Abort); ok {
			a.aborted("peer", abortLabel(ab.Reason))
		}
		return Sta1
	case AA4:
		a.dropMessage("connection lost")
		a.setEnd(EndConnectionLost, errDetail(info.err))
		return Sta1
	case AA5:
		a.stopARTIM()
		a.setEnd(EndConnectionLost, "closed before A-ASSOCIATE-RQ")
		return Sta1
	case AA6:
		return Sta13
	case AA7:
		a.send(&pdu.Abort{Source: pdu.AbortSourceProvider, Reason: reasonFor(ev, info)})
		return Sta13
	case AA8:
		a.dropMessage("association aborted")
		a.setEnd(EndProtocolError, describe(ev, info))
		a.aborted("local", abortLabel(reasonFor(ev, info)))
		a.send(&pdu.Abort{Source: pdu.AbortSourceProvider, Reason: reasonFor(ev, info)})
		a.startARTIM()
		return Sta13
	}
	a.log.Error("requestor action reached in acceptor", "action", act, "state", a.state, "event", ev)
	a.setEnd(EndProtocolError, "internal error")
	return Sta1
}

// setEnd records the first reason the association is ending for.
func (a *assoc) setEnd(r EndReason, detail string) {
	if a.end == 0 {
		a.end, a.endDetail = r, detail
	}
}

// aborted records who aborted and why, once.
func (a *assoc) aborted(source, reason string) {
	if a.abortSource == "" {
		a.abortSource, a.abortReason = source, reason
	}
}

// reasonFor is the A-ABORT reason for an unexpected (valid) PDU or an
// invalid one (PS3.8 Table 9-26).
func reasonFor(ev Event, info evInfo) pdu.AbortReason {
	if ev == Evt19 {
		return info.reason
	}
	return pdu.AbortUnexpectedPDU
}

func describe(ev Event, info evInfo) string {
	switch {
	case ev == Evt19 && info.err != nil:
		return info.err.Error()
	case info.p != nil:
		return fmt.Sprintf("unexpected %v", info.p.Type())
	}
	return ev.String()
}

func abortDetail(info evInfo) string {
	if ab, ok := info.p.(*pdu.Abort); ok {
		return fmt.Sprintf("A-ABORT source %v reason %v", ab.Source, ab.Reason)
	}
	return ""
}

func errDetail(err error) string {
	if err == nil || errors.Is(err, io.EOF) {
		return "closed by peer"
	}
	return err.Error()
}

// ARTIM (PS3.8 9.1.5) is a deadline on reads in Sta2 and Sta13.
func (a *assoc) startARTIM() { a.artim = time.Now().Add(a.srv.cfg.ARTIMTimeout) }
func (a *assoc) stopARTIM()  { a.artim = time.Time{} }

// readEvent reads the next PDU under the deadline of the current state and
// maps it, or the failure to read it, to an event.
func (a *assoc) readEvent() (Event, evInfo) {
	if a.broken != nil {
		return Evt17, evInfo{err: a.broken}
	}
	var deadline time.Time
	switch {
	case !a.artim.IsZero():
		deadline = a.artim
	default:
		deadline = time.Now().Add(a.srv.cfg.IdleTimeout)
	}
	a.mu.Lock()
	if a.closing {
		// Shutdown: do not wait for the peer any more.
		deadline = time.Now()
	}
	a.conn.SetReadDeadline(deadline)
	a.mu.Unlock()
	// In Sta6 the idle timeout waits for a PDU to begin; once it has, the
	// PDU timeout bounds the rest (ARTIM alone bounds Sta2 and Sta13).
	a.ac.armed, a.ac.inPDU = a.artim.IsZero(), false

	p, err := a.rd.ReadPDU()
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
			a.mu.Lock()
			closing := a.closing
			a.mu.Unlock()
			switch {
			case a.state == Sta2 || a.state == Sta13:
				if closing && a.state == Sta2 {
					a.setEnd(EndShutdown, "")
				}
				return Evt18, evInfo{err: err}
			case closing:
				a.setEnd(EndShutdown, "")
			case a.ac.inPDU:
				a.setEnd(EndIdleTimeout, fmt.Sprintf("a PDU took longer than %v to arrive (--pdu-timeout)", a.srv.cfg.PDUTimeout))
			default:
				a.setEnd(EndIdleTimeout, fmt.Sprintf("nothing received for %v", a.srv.cfg.IdleTimeout))
			}
			return Evt15, evInfo{err: err}
		}
		if reason, ok := pdu.AbortReasonOf(err); ok {
			return Evt19, evInfo{err: err, reason: reason}
		}
		return Evt17, evInfo{err: err}
	}
	switch p := p.(type) {
	case *pdu.AssociateRQ:
		if err := checkAssociateRQ(p); err != nil {
			return Evt19, evInfo{p: p, err: err, reason: pdu.AbortInvalidPDUParameterValue}
		}
		return Evt6, evInfo{p: p}
	case *pdu.AssociateAC:
		return Evt3, evInfo{p: p}
	case *pdu.AssociateRJ:
		return Evt4, evInfo{p: p}
	case *pdu.PDataTF:
		return Evt10, evInfo{p: p}
	case *pdu.ReleaseRQ:
		return Evt12, evInfo{p: p}
	case *pdu.ReleaseRP:
		return Evt13, evInfo{p: p}
	case *pdu.Abort:
		return Evt16, evInfo{p: p}
	}
	return Evt19, evInfo{err: fmt.Errorf("unhandled %T", p), reason: pdu.AbortUnrecognizedPDU}
}

// pduStarted puts the PDU timeout on the rest of a PDU whose first bytes
// just arrived (unless shutdown already cut the wait short).
func (a *assoc) pduStarted() {
	a.mu.Lock()
	if !a.closing {
		a.conn.SetReadDeadline(time.Now().Add(a.srv.cfg.PDUTimeout))
	}
	a.mu.Unlock()
}

// abortForShutdown makes the association abort at its next read, or now if
// it is waiting in one. Called by Server.Shutdown from another goroutine.
func (a *assoc) abortForShutdown() {
	a.mu.Lock()
	a.closing = true
	a.conn.SetReadDeadline(time.Now())
	a.mu.Unlock()
}

// send writes one PDU in one write.
func (a *assoc) send(p pdu.PDU) {
	b, err := pdu.Append(a.wbuf[:0], p)
	if err != nil {
		a.log.Error("cannot encode PDU", "pdu", p.Type(), "err", err)
		a.broken = err
		return
	}
	a.wbuf = b
	a.sendRaw(b)
}

func (a *assoc) sendRaw(b []byte) {
	if a.broken != nil {
		return
	}
	a.reports.mu.Lock()
	err := a.writeLocked(b)
	a.reports.mu.Unlock()
	if err != nil {
		a.broken = err
	}
}

// writeLocked writes b whole, under the write timeout; a.reports.mu is
// held, so that a report and the association's own PDUs never interleave.
func (a *assoc) writeLocked(b []byte) error {
	a.conn.SetWriteDeadline(time.Now().Add(a.srv.cfg.WriteTimeout))
	_, err := a.conn.Write(b)
	return err
}

// teardown closes the transport and releases what the association held.
func (a *assoc) teardown() {
	a.dropMessage("association ended")
	a.closeReports()
	a.stopOp()
	a.conn.Close()
	a.rd.Release()
	if a.hasSlot {
		a.srv.releaseSlot()
		a.hasSlot = false
	}
	if a.hasHost {
		a.srv.releaseHost(a.peerAddr())
		a.hasHost = false
	}
	if a.end == 0 {
		a.end = EndConnectionLost
	}
	m := a.srv.m
	m.ended.WithLabelValues(a.end.String()).Inc()
	if a.accepted {
		m.active.Dec()
	}
	if a.abortSource != "" {
		m.aborted.WithLabelValues(a.abortSource, a.abortReason).Inc()
	}
	attrs := []any{
		"outcome", a.end.String(),
		"duration", time.Since(a.start).Round(time.Microsecond),
		"calling_ae", a.calling, "called_ae", a.called,
		"stores", a.stats.stores.Load(), "store_failures", a.stats.failed.Load(), "echoes", a.stats.echoes.Load(),
		"bytes", a.stats.bytes.Load(),
	}
	if n := a.stats.actions.Load(); n > 0 {
		attrs = append(attrs, "commitment_requests", n)
	}
	if n := a.stats.finds.Load(); n > 0 {
		attrs = append(attrs, "finds", n)
	}
	if n := a.stats.moves.Load(); n > 0 {
		attrs = append(attrs, "moves", n)
	}
	if n := a.stats.nonconforming.Load(); n > 0 {
		attrs = append(attrs, "nonconforming_uid_objects", n)
	}
	if a.endDetail != "" {
		attrs = append(attrs, "detail", a.endDetail)
	}
	a.live.Store(nil) // no longer in progress (Active), before it is told as ended
	// Connected and never spoke (a TCP health check, a port scanner),
	// whatever ended it: not an association worth telling of.
	silent := a.calling == "" && (a.end == EndARTIMExpired || a.bare || a.ac.read == 0)
	if a.srv.cfg.Ended != nil && !silent {
		a.srv.cfg.Ended(a.summary())
	}
	level := slog.LevelInfo
	switch {
	case a.end == EndConnectionLost && a.calling == "" && (a.bare || a.ac.read == 0):
		// Connected and closed without a byte: load balancers' and
		// Kubernetes' TCP checks do that every few seconds.
		level = slog.LevelDebug
	case a.end == EndProtocolError, a.end == EndConnectionLost, a.end == EndIdleTimeout:
		level = slog.LevelWarn
	case a.end == EndARTIMExpired:
		if a.calling == "" {
			// Connected and never spoke: port scanners, health checks.
			level = slog.LevelDebug
		}
	}
	a.log.Log(context.Background(), level, "association ended", attrs...)
}

// Summary is what an association did, as it ended: for an operator's list
// of recent associations. CallingAE and CalledAE are the peer's words
// (checked as AE titles only when it was accepted): escape them wherever
// they are shown.
type Summary struct {
	Start                 time.Time
	Duration              time.Duration
	CallingAE, CalledAE   string
	Peer                  netip.Addr
	TLS                   bool
	Outcome               EndReason
	Detail                string // why it was rejected or aborted, when known
	Stores, StoreFailures int
	Echoes                int
	CommitmentRequests    int
	Finds, Moves          int
	Bytes                 int64
}

func (a *assoc) summary() Summary {
	s := Summary{
		Start: a.start, CallingAE: a.calling, CalledAE: a.called, Peer: a.addr, TLS: a.tls,
		Outcome: a.end, Detail: a.endDetail,
	}
	a.counts(&s)
	return s
}

// counts fills s's counts and duration from the association's stats (safe
// from any goroutine).
func (a *assoc) counts(s *Summary) {
	s.Duration = time.Since(a.start)
	s.Stores, s.StoreFailures, s.Echoes = int(a.stats.stores.Load()), int(a.stats.failed.Load()), int(a.stats.echoes.Load())
	s.CommitmentRequests, s.Finds, s.Moves = int(a.stats.actions.Load()), int(a.stats.finds.Load()), int(a.stats.moves.Load())
	s.Bytes = a.stats.bytes.Load()
}

// Active is what the associations in progress have done so far, the
// oldest first (Outcome is 0: they have not ended).
func (s *Server) Active() []Summary {
	s.mu.Lock()
	var out []Summary
	for a := range s.assocs {
		if l := a.live.Load(); l != nil {
			sum := *l
			a.counts(&sum)
			out = append(out, sum)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(x, y Summary) int { return x.Start.Compare(y.Start) })
	return out
}
