package dimse

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
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

// Client is the requestor side of one association. It is not safe for
// concurrent use: DIMSE operations run one at a time (no asynchronous
// operations window is negotiated).
type Client struct {
	conn    net.Conn
	rd      *pdu.Reader
	timeout time.Duration
	peerMax uint32
	ac      *pdu.AssociateAC
	ctxs    map[uint8]acceptedContext
	msgID   uint16
	closed  bool
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
	d := net.Dialer{Timeout: cfg.Timeout}
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
		},
	}
	for i, p := range cfg.Contexts {
		rq.PresentationContexts = append(rq.PresentationContexts, pdu.PresentationContextRQ{
			ID: uint8(2*i + 1), AbstractSyntax: p.AbstractSyntax, TransferSyntaxes: p.TransferSyntaxes,
		})
	}
	if err := c.write(rq); err != nil {
		conn.Close()
		return nil, err
	}
	p, err := c.read()
	if err != nil {
		conn.Close()
		return nil, err
	}
	switch p := p.(type) {
	case *pdu.AssociateAC:
		c.ac = p
	case *pdu.AssociateRJ:
		conn.Close()
		return nil, &RejectedError{*p}
	default:
		c.Abort()
		return nil, fmt.Errorf("dimse: expected A-ASSOCIATE-AC or -RJ, got %v", p.Type())
	}
	if c.ac.UserInfo.HasMaxLength {
		c.peerMax = c.ac.UserInfo.MaxLength
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
	c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	_, err := c.conn.Write(b)
	return err
}

func (c *Client) read() (pdu.PDU, error) {
	c.conn.SetReadDeadline(time.Now().Add(c.timeout))
	p, err := c.rd.ReadPDU()
	if err != nil {
		if _, ok := pdu.AbortReasonOf(err); ok {
			c.Abort()
		}
		return nil, err
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

// sendDataSet streams data as data set PDVs, one per PDU, each PDU at most
// the peer's maximum length. It reads one chunk ahead to know which
// fragment is the last.
func (c *Client) sendDataSet(id uint8, data io.Reader) error {
	chunk := 1 << 20
	if c.peerMax != 0 {
		chunk = int(c.peerMax) - pdu.PDVHeaderLen
	}
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

// readResponse reads the response command on context id.
func (c *Client) readResponse(id uint8) (*Command, error) {
	var buf []byte
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
			if v.ContextID != id || !v.Command {
				c.Abort()
				return nil, fmt.Errorf("dimse: unexpected PDV (context %d, command %v)", v.ContextID, v.Command)
			}
			buf = append(buf, v.Data...)
			if v.Last {
				cmd, err := DecodeCommand(buf)
				if err != nil {
					c.Abort()
					return nil, err
				}
				return cmd, nil
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

// Abort sends an A-ABORT (service-user) and closes the connection.
func (c *Client) Abort() error {
	if c.closed {
		return nil
	}
	_ = c.write(&pdu.Abort{Source: pdu.AbortSourceUser})
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
