package dimse

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// ProposedContext is a presentation context a requestor proposes.
type ProposedContext struct {
	AbstractSyntax   string
	TransferSyntaxes []string
}

// DialConfig configures a requestor association.
type DialConfig struct {
	CallingAE string
	CalledAE  string
	// Contexts are proposed with IDs 1, 3, 5, ... in this order.
	Contexts []ProposedContext
	// MaxPDULength is the maximum length we advertise; 0 means
	// DefaultMaxPDULength.
	MaxPDULength uint32
	// Timeout bounds each exchange (association setup, each DIMSE
	// operation, release). 0 means 30 s.
	Timeout time.Duration
	// UserIdentity, if set, is sent as sub-item 58.
	UserIdentity *pdu.UserIdentityRQ
	// TLS, if set, secures the connection (DICOM TLS, PS3.15 B.12/B.13).
	TLS *tls.Config
	// LocalAddr, if set, is the local address to connect from.
	LocalAddr net.Addr
	// RoleSelections are proposed as SCP/SCU role selection sub-items
	// (PS3.7 D.3.3.4), e.g. the SCP role of Storage Commitment for sending
	// its report on an association of our own (PS3.4 J.3.3).
	RoleSelections []pdu.RoleSelection
}

// RejectedError is returned by Dial when the acceptor rejects.
type RejectedError struct{ pdu.AssociateRJ }

func (e *RejectedError) Error() string {
	return fmt.Sprintf("association rejected: %v, %v, %s", e.Result, e.Source, pdu.RejectReasonString(e.Source, e.Reason))
}

// AbortedError is returned when the peer aborts the association.
type AbortedError struct{ pdu.Abort }

func (e *AbortedError) Error() string {
	return fmt.Sprintf("association aborted by peer: source %v, reason %v", e.Source, e.Reason)
}

// ErrInterrupted is wrapped by the error of an operation cut short by
// Client.Interrupt (or by the end of Dial's context during negotiation).
var ErrInterrupted = errors.New("dimse: interrupted")

// Client is the requestor side of one association. It is not safe for
// concurrent use: DIMSE operations run one at a time (no asynchronous
// operations window is negotiated). Only Interrupt may be called from
// another goroutine.
type Client struct {
	conn    net.Conn
	rd      *pdu.Reader
	timeout time.Duration
	peerMax uint32
	ac      *pdu.AssociateAC
	ctxs    map[uint8]acceptedContext
	msgID   uint16
	closed  bool
	// writeCut: a write failed, maybe half way through a PDU, so nothing
	// more can be framed on this connection (Abort only closes it).
	writeCut    bool
	interrupted atomic.Bool
}

type acceptedContext struct {
	abstract string
	ts       string
}

// Dial connects to addr and negotiates an association.
func Dial(ctx context.Context, addr string, cfg DialConfig) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxPDULength == 0 {
		cfg.MaxPDULength = DefaultMaxPDULength
	}
	for _, ae := range []string{cfg.CallingAE, cfg.CalledAE} {
		if err := ValidAETitle(ae); err != nil {
			return nil, err
		}
	}
	if len(cfg.Contexts) == 0 || len(cfg.Contexts) > 128 {
		return nil, fmt.Errorf("dimse: %d presentation contexts proposed; 1 to 128 can be", len(cfg.Contexts))
	}
	d := net.Dialer{Timeout: cfg.Timeout, LocalAddr: cfg.LocalAddr}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if cfg.TLS != nil {
		tcfg := cfg.TLS
		if tcfg.ServerName == "" {
			tcfg = tcfg.Clone()
			tcfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(conn, tcfg)
		hctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("dimse: TLS handshake: %w", err)
		}
		conn = tc
	}
	c := &Client{
		conn:    conn,
		rd:      pdu.NewReader(conn, pdu.Limits{MaxPDataLength: cfg.MaxPDULength}, nil),
		timeout: cfg.Timeout,
	}
	rq := &pdu.AssociateRQ{
		ProtocolVersion:    1,
		CalledAE:           pdu.MakeAE(cfg.CalledAE),
		CallingAE:          pdu.MakeAE(cfg.CallingAE),
		ApplicationContext: uid.ApplicationContext,
		UserInfo: pdu.UserInformation{
			HasMaxLength: true, MaxLength: cfg.MaxPDULength,
			ImplementationClassUID: ImplementationClassUID, ImplementationVersionName: "DICOMGW",
			UserIdentityRQ: cfg.UserIdentity,
			RoleSelections: cfg.RoleSelections,
		},
	}
	for i, p := range cfg.Contexts {
		rq.PresentationContexts = append(rq.PresentationContexts, pdu.PresentationContextRQ{
			ID: uint8(2*i + 1), AbstractSyntax: p.AbstractSyntax, TransferSyntaxes: p.TransferSyntaxes,
		})
	}
	// ctx bounds the negotiation too: a peer that takes the connection
	// and never answers holds the caller only until ctx ends.
	stop := context.AfterFunc(ctx, c.Interrupt)
	p, err := c.negotiate(rq)
	if !stop() {
		if _, ok := p.(*pdu.AssociateAC); ok {
			c.Abort()
		} else {
			c.Close()
		}
		return nil, fmt.Errorf("%w: association with %s: %w", ErrInterrupted, addr, ctx.Err())
	}
	if err != nil {
		return nil, err
	}
	switch p := p.(type) {
	case *pdu.AssociateAC:
		c.ac = p
	case *pdu.AssociateRJ:
		c.Close()
		return nil, &RejectedError{*p}
	default:
		c.Abort()
		return nil, fmt.Errorf("dimse: expected A-ASSOCIATE-AC or -RJ, got %v", p.Type())
	}
	if c.ac.UserInfo.HasMaxLength {
		c.peerMax = c.ac.UserInfo.MaxLength
	}
	if c.peerMax != 0 && c.peerMax <= pdu.PDVHeaderLen {
		// PS3.8 D.1: the maximum length bounds the PDVs we send; one this
		// small cannot carry a byte of a command or data set.
		c.Abort()
		return nil, fmt.Errorf("dimse: the acceptor's maximum length %d cannot carry a presentation data value", c.peerMax)
	}
	c.ctxs = make(map[uint8]acceptedContext)
	for _, pc := range c.ac.PresentationContexts {
		if pc.Result != pdu.ContextAcceptance || pc.ID%2 == 0 || int(pc.ID/2) >= len(cfg.Contexts) {
			continue
		}
		c.ctxs[pc.ID] = acceptedContext{abstract: cfg.Contexts[pc.ID/2].AbstractSyntax, ts: pc.TransferSyntax}
	}
	return c, nil
}

// negotiate sends the A-ASSOCIATE-RQ and reads the answer; on failure the
// connection is closed.
func (c *Client) negotiate(rq *pdu.AssociateRQ) (pdu.PDU, error) {
	if err := c.write(rq); err != nil {
		c.Close()
		return nil, err
	}
	p, err := c.read()
	if err != nil {
		c.Close()
		return nil, err
	}
	return p, nil
}

// Interrupt makes the operation in progress (a Store blocked on a slow
// peer, a Release waiting for its answer) and every later one fail at once
// with an error wrapping ErrInterrupted. It is the one method that may be
// called from another goroutine, e.g. with context.AfterFunc; the caller
// then aborts the association (Abort).
func (c *Client) Interrupt() {
	c.interrupted.Store(true)
	c.conn.SetDeadline(time.Unix(1, 0))
}

// deadline puts the exchange timeout on the next read or write, unless the
// client was interrupted. Interrupt stores its flag before it sets its
// deadline and this sets its deadline before it loads the flag, so
// whichever runs second, the past deadline wins.
func (c *Client) deadline(read bool) {
	d := time.Now().Add(c.timeout)
	if read {
		c.conn.SetReadDeadline(d)
	} else {
		c.conn.SetWriteDeadline(d)
	}
	if c.interrupted.Load() {
		c.conn.SetDeadline(time.Unix(1, 0))
	}
}

// interruptErr wraps err with ErrInterrupted when the client was
// interrupted (the error is then the deadline Interrupt set).
func (c *Client) interruptErr(err error) error {
	if err != nil && c.interrupted.Load() && !errors.Is(err, ErrInterrupted) {
		return fmt.Errorf("%w: %w", ErrInterrupted, err)
	}
	return err
}

// MessageID is the Message ID (0000,0110) of the last request sent: the
// response to it must carry it as Message ID Being Responded To
// (0000,0120) (PS3.7 9.3.1.2).
func (c *Client) MessageID() uint16 { return c.msgID }

// Accepted returns the A-ASSOCIATE-AC the acceptor sent.
func (c *Client) Accepted() *pdu.AssociateAC { return c.ac }

// AcceptedTransferSyntax returns the transfer syntax accepted for the
// context proposing abstract, if one was accepted.
func (c *Client) AcceptedTransferSyntax(abstract string) (string, bool) {
	for _, pc := range c.ctxs {
		if pc.abstract == abstract {
			return pc.ts, true
		}
	}
	return "", false
}

func (c *Client) contextFor(abstract, ts string) (uint8, bool) {
	for id, pc := range c.ctxs {
		if pc.abstract == abstract && (ts == "" || pc.ts == ts) {
			return id, true
		}
	}
	return 0, false
}

func (c *Client) write(p pdu.PDU) error {
	b, err := pdu.Encode(p)
	if err != nil {
		return err
	}
	return c.writeRaw(b)
}

func (c *Client) writeRaw(b []byte) error {
	c.deadline(false)
	_, err := c.conn.Write(b)
	if err != nil {
		c.writeCut = true
	}
	return c.interruptErr(err)
}

func (c *Client) read() (pdu.PDU, error) {
	c.deadline(true)
	p, err := c.rd.ReadPDU()
	if err != nil {
		if _, ok := pdu.AbortReasonOf(err); ok {
			c.Abort()
		}
		return nil, c.interruptErr(err)
	}
	if ab, ok := p.(*pdu.Abort); ok {
		c.conn.Close()
		c.closed = true
		return nil, &AbortedError{*ab}
	}
	return p, nil
}

func (c *Client) nextMessageID() uint16 {
	c.msgID++
	return c.msgID
}

// Echo sends a C-ECHO-RQ and returns the response status.
func (c *Client) Echo() (Status, error) {
	id, ok := c.contextFor(uid.Verification, "")
	if !ok {
		return 0, errors.New("dimse: no accepted presentation context for Verification")
	}
	cmd := &Command{
		AffectedSOPClassUID: uid.Verification, CommandField: CEchoRQ,
		MessageID: c.nextMessageID(), CommandDataSetType: NoDataSet,
		Has: HasAffectedSOPClassUID | HasMessageID,
	}
	if err := c.writeRaw(fragment(nil, id, AppendCommand(nil, cmd), c.peerMax)); err != nil {
		return 0, err
	}
	rsp, err := c.readResponse(id)
	if err != nil {
		return 0, err
	}
	return rsp.Status, nil
}

// Store sends a C-STORE-RQ with the data set read from data (encoded in
// transferSyntax, which must have been accepted for sopClass) and returns
// the response command. The data set is streamed: it is never held whole.
func (c *Client) Store(sopClass, sopInstance, transferSyntax string, data io.Reader) (*Command, error) {
	id, ok := c.contextFor(sopClass, transferSyntax)
	if !ok {
		return nil, fmt.Errorf("dimse: no accepted presentation context for %s in %s", sopClass, transferSyntax)
	}
	cmd := &Command{
		AffectedSOPClassUID: sopClass, CommandField: CStoreRQ, MessageID: c.nextMessageID(),
		Priority: 0, CommandDataSetType: 0x0000, AffectedSOPInstanceUID: sopInstance,
		Has: HasAffectedSOPClassUID | HasMessageID | HasPriority | HasAffectedSOPInstanceUID,
	}
	if err := c.writeRaw(fragment(nil, id, AppendCommand(nil, cmd), c.peerMax)); err != nil {
		return nil, err
	}
	if err := c.sendDataSet(id, data); err != nil {
		return nil, err
	}
	return c.readResponse(id)
}

// maxDataChunk bounds the data set bytes of one PDU we send, whatever the
// peer's maximum length: it sizes two buffers, and a peer may advertise
// up to 4 GiB.
const maxDataChunk = 1 << 20

// dataChunk is how many data set bytes go into one PDU to a peer whose
// maximum length is peerMax (0: no limit): at most maxDataChunk, and even,
// so that every fragment but the last of an odd data set has an even
// length (dcmtk aborts the association on an odd fragment; a data set's
// elements have even lengths, PS3.5 7.1.1).
func dataChunk(peerMax uint32) int {
	chunk := maxDataChunk
	if peerMax != 0 && int64(peerMax)-pdu.PDVHeaderLen < maxDataChunk {
		chunk = int(peerMax) - pdu.PDVHeaderLen
	}
	if chunk > 1 {
		chunk &^= 1
	}
	return chunk
}

// sendDataSet streams data as data set PDVs, one per PDU, each PDU at most
// the peer's maximum length. It reads one chunk ahead to know which
// fragment is the last.
func (c *Client) sendDataSet(id uint8, data io.Reader) error {
	chunk := dataChunk(c.peerMax)
	hdr := pdu.HeaderLen + pdu.PDVHeaderLen
	cur := make([]byte, hdr+chunk)
	next := make([]byte, hdr+chunk)
	n, err := io.ReadFull(data, cur[hdr:])
	for {
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			c.Abort()
			return err
		}
		last := err != nil
		var m int
		var nerr error
		if !last {
			m, nerr = io.ReadFull(data, next[hdr:])
			if nerr == io.EOF {
				last = true
			}
		}
		putDataPDU(cur, id, last, n)
		if werr := c.writeRaw(cur[:hdr+n]); werr != nil {
			return werr
		}
		if last {
			return nil
		}
		cur, next = next, cur
		n, err = m, nerr
	}
}

// putDataPDU writes, in front of n data bytes at b[12:], the header of a
// P-DATA-TF holding them as one data set PDV (PS3.8 9.3.5, E.2).
func putDataPDU(b []byte, id uint8, last bool, n int) {
	b[0], b[1] = byte(pdu.TypePDataTF), 0
	binary.BigEndian.PutUint32(b[2:], uint32(pdu.PDVHeaderLen+n))
	binary.BigEndian.PutUint32(b[6:], uint32(2+n))
	b[10], b[11] = id, 0
	if last {
		b[11] = 0x02
	}
}

// EventReport sends an N-EVENT-REPORT-RQ of eventType about sopInstance,
// with data set data encoded in the transfer syntax accepted for sopClass
// (AcceptedTransferSyntax), and returns the response command. A data set
// that comes with the response (an event reply) is read and dropped.
func (c *Client) EventReport(sopClass, sopInstance string, eventType uint16, data []byte) (*Command, error) {
	id, ok := c.contextFor(sopClass, "")
	if !ok {
		return nil, fmt.Errorf("dimse: no accepted presentation context for %s", sopClass)
	}
	cmd := &Command{
		AffectedSOPClassUID: sopClass, CommandField: NEventRQ, MessageID: c.nextMessageID(),
		CommandDataSetType: 0x0000, AffectedSOPInstanceUID: sopInstance, EventTypeID: eventType,
		Has: HasAffectedSOPClassUID | HasMessageID | HasAffectedSOPInstanceUID | HasEventTypeID,
	}
	b := fragment(nil, id, AppendCommand(nil, cmd), c.peerMax)
	if err := c.writeRaw(fragmentData(b, id, data, c.peerMax)); err != nil {
		return nil, err
	}
	rsp, err := c.readResponseData(id, true)
	if err != nil {
		return nil, err
	}
	if rsp.CommandField != NEventRSP || rsp.MessageIDBeingRespondedTo != cmd.MessageID {
		c.Abort()
		return nil, fmt.Errorf("dimse: %v responding to message %d, expected N-EVENT-REPORT-RSP to %d", rsp.CommandField, rsp.MessageIDBeingRespondedTo, cmd.MessageID)
	}
	return rsp, nil
}

// maxResponseData bounds the data set a response may carry (which is
// dropped): an event reply or a failed store's is a few elements.
const maxResponseData = 1 << 20

// readResponse reads the response command on context id. A data set the
// command announces is the caller's to judge (a C-STORE-RSP must not have
// one), except with withData, where it is read and dropped (an
// N-EVENT-REPORT-RSP's event reply).
func (c *Client) readResponse(id uint8) (*Command, error) { return c.readResponseData(id, false) }

func (c *Client) readResponseData(id uint8, withData bool) (*Command, error) {
	var buf []byte
	var cmd *Command
	dropped := 0
	for {
		p, err := c.read()
		if err != nil {
			return nil, err
		}
		pd, ok := p.(*pdu.PDataTF)
		if !ok {
			c.Abort()
			return nil, fmt.Errorf("dimse: expected P-DATA-TF, got %v", p.Type())
		}
		for _, v := range pd.PDVs {
			if v.ContextID != id || v.Command != (cmd == nil) {
				c.Abort()
				return nil, fmt.Errorf("dimse: unexpected PDV (context %d, command %v)", v.ContextID, v.Command)
			}
			if cmd != nil {
				if dropped += len(v.Data); dropped > maxResponseData {
					c.Abort()
					return nil, fmt.Errorf("dimse: the response's data set is longer than %d bytes", maxResponseData)
				}
				if v.Last {
					return cmd, nil
				}
				continue
			}
			buf = append(buf, v.Data...)
			if v.Last {
				cmd, err = DecodeCommand(buf)
				if err != nil {
					c.Abort()
					return nil, err
				}
				if !withData || !cmd.HasDataSet() {
					return cmd, nil
				}
			}
		}
	}
}

// Release releases the association (A-RELEASE-RQ, wait for A-RELEASE-RP)
// and closes the connection.
func (c *Client) Release() error {
	if c.closed {
		return errors.New("dimse: association already closed")
	}
	defer c.Close()
	if err := c.write(&pdu.ReleaseRQ{}); err != nil {
		return err
	}
	for {
		p, err := c.read()
		if err != nil {
			return err
		}
		switch p.(type) {
		case *pdu.ReleaseRP:
			return nil
		case *pdu.PDataTF:
			// A late response; nothing is waiting for it any more.
		default:
			return fmt.Errorf("dimse: expected A-RELEASE-RP, got %v", p.Type())
		}
	}
}

// abortTimeout bounds the write of an A-ABORT: the association is being
// given up, a peer that does not read is not waited for.
const abortTimeout = 2 * time.Second

// Abort sends an A-ABORT (service-user) and closes the connection. After a
// write failed (maybe half way through a PDU: an A-ABORT after it would be
// read as part of it) it only closes the connection, which the peer takes
// as an abort too (PS3.8 9.2.1, Evt17). It is sent after Interrupt too.
func (c *Client) Abort() error {
	if c.closed {
		return nil
	}
	if !c.writeCut {
		if b, err := pdu.Encode(&pdu.Abort{Source: pdu.AbortSourceUser}); err == nil {
			c.conn.SetWriteDeadline(time.Now().Add(min(c.timeout, abortTimeout)))
			c.conn.Write(b)
		}
	}
	return c.Close()
}

// Close closes the connection without release or abort.
func (c *Client) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	c.rd.Release()
	return c.conn.Close()
}
