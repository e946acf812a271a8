package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// CStoreConfig configures a DICOM C-STORE destination: another PACS, sent
// to with our own requestor (dicom://CALLED_AE@HOST:PORT, or dicoms:// for
// DICOM TLS).
type CStoreConfig struct {
	// Addr is the peer's DICOM port, host:port.
	Addr string
	// CalledAE is the peer's AE title.
	CalledAE string
	// CallingAE is ours: the calling AE title of every association, unless
	// OriginalCallingAE.
	CallingAE string
	// OriginalCallingAE sends each object with the calling AE title of the
	// association it was received on (a PACS that files objects by sender
	// sees the modality, not the gateway): a batch is split by calling AE,
	// one association each.
	OriginalCallingAE bool
	// TLS, if set, secures the connections (DICOM TLS, PS3.15 B.12/B.13):
	// its RootCAs verify the peer, its Certificates are our client
	// certificate. nil: plaintext.
	TLS *tls.Config
	// Timeout bounds each exchange: connecting, the association's
	// negotiation, each PDU written, each response waited for, the
	// release. 0: DefaultCStoreTimeout.
	Timeout time.Duration
	// MaxPDULength is the maximum length we advertise for what the peer
	// sends us (PS3.8 D.1); 0: dimse.DefaultMaxPDULength.
	MaxPDULength uint32
}

// DefaultCStoreTimeout bounds each exchange with a C-STORE destination.
const DefaultCStoreTimeout = 30 * time.Second

// maxContexts is how many presentation contexts one association can
// propose (PS3.8 9.3.2.2: odd IDs 1-255).
const maxContexts = 128

// CStore delivers objects to another PACS with C-STORE (PS3.4 B). Each
// object goes in its own transfer syntax, byte for byte as it was received
// (never transcoded: a context is proposed with exactly that syntax, and
// an object whose syntax the peer refuses is dead-lettered saying so),
// streamed from the spool, a batch over one association. An object is
// delivered only on a C-STORE-RSP that answers its request (message ID,
// SOP class and instance) with success or a warning.
type CStore struct {
	cfg CStoreConfig
	log *slog.Logger
}

// NewCStore returns a C-STORE destination.
func NewCStore(cfg CStoreConfig, log *slog.Logger) (*CStore, error) {
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("cstore: address %q: %w", cfg.Addr, err)
	}
	if host == "" {
		return nil, fmt.Errorf("cstore: address %q has no host", cfg.Addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return nil, fmt.Errorf("cstore: address %q: port must be 1 to 65535", cfg.Addr)
	}
	if err := dimse.ValidAETitle(cfg.CalledAE); err != nil {
		return nil, fmt.Errorf("cstore: called AE title: %w", err)
	}
	if err := dimse.ValidAETitle(cfg.CallingAE); err != nil {
		return nil, fmt.Errorf("cstore: calling AE title: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultCStoreTimeout
	}
	if cfg.MaxPDULength == 0 {
		cfg.MaxPDULength = dimse.DefaultMaxPDULength
	}
	if cfg.MaxPDULength < 4096 {
		return nil, fmt.Errorf("cstore: max PDU length %d is below 4096", cfg.MaxPDULength)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &CStore{cfg: cfg, log: log}, nil
}

// String is dicom://CALLED@host:port (dicoms:// with TLS).
func (c *CStore) String() string {
	scheme := "dicom"
	if c.cfg.TLS != nil {
		scheme = "dicoms"
	}
	return scheme + "://" + c.cfg.CalledAE + "@" + c.cfg.Addr
}

// Deliver sends objs over one association per calling AE title (one in
// all unless OriginalCallingAE), or more when the batch has more distinct
// (SOP class, transfer syntax) pairs than one association can propose.
func (c *CStore) Deliver(ctx context.Context, objs []*Object) []Result {
	out := make([]Result, len(objs))
	var callers []string
	byCaller := map[string][]int{}
	for i, o := range objs {
		if r, ok := unsendable(o); ok {
			out[i] = r
			continue
		}
		calling := c.cfg.CallingAE
		if c.cfg.OriginalCallingAE {
			if err := dimse.ValidAETitle(o.CallingAE); err != nil {
				out[i] = Result{Outcome: Dead, Reason: "cannot be sent with its original calling AE title: " + err.Error()}
				continue
			}
			calling = o.CallingAE
		}
		if byCaller[calling] == nil {
			callers = append(callers, calling)
		}
		byCaller[calling] = append(byCaller[calling], i)
	}
	for _, calling := range callers {
		for _, part := range splitByContexts(objs, byCaller[calling]) {
			if ctx.Err() != nil {
				for _, i := range part {
					out[i] = Result{Outcome: Abandoned, Reason: "shutting down"}
				}
				continue
			}
			c.association(ctx, calling, objs, part, out)
		}
	}
	return out
}

// unsendable says why an object cannot go out as a C-STORE at all: UIDs
// that cannot be put in a command or a presentation context.
func unsendable(o *Object) (Result, bool) {
	for _, u := range []struct{ name, v string }{
		{"SOP Class UID", o.SOPClassUID},
		{"SOP Instance UID", o.SOPInstanceUID},
		{"Transfer Syntax UID", o.TransferSyntaxUID},
	} {
		if err := uid.Valid(u.v); err != nil {
			return Result{Outcome: Dead, Reason: fmt.Sprintf("cannot be sent with C-STORE: %s: %v", u.name, err)}, true
		}
	}
	return Result{}, false
}

// pcKey is what a presentation context is proposed for.
type pcKey struct{ class, ts string }

func keyOf(o *Object) pcKey { return pcKey{o.SOPClassUID, o.TransferSyntaxUID} }

// splitByContexts cuts a list of objects, in order, into parts of at most
// maxContexts distinct presentation contexts.
func splitByContexts(objs []*Object, idx []int) [][]int {
	var parts [][]int
	var cur []int
	seen := map[pcKey]bool{}
	for _, i := range idx {
		k := keyOf(objs[i])
		if !seen[k] && len(seen) == maxContexts {
			parts = append(parts, cur)
			cur, seen = nil, map[pcKey]bool{}
		}
		seen[k] = true
		cur = append(cur, i)
	}
	return append(parts, cur)
}

// association sends objs[idx] over one association as calling and writes
// their results into out.
func (c *CStore) association(ctx context.Context, calling string, objs []*Object, idx []int, out []Result) {
	var keys []pcKey
	pos := map[pcKey]int{}
	var proposed []dimse.ProposedContext
	for _, i := range idx {
		k := keyOf(objs[i])
		if _, ok := pos[k]; !ok {
			pos[k] = len(keys)
			keys = append(keys, k)
			// Exactly the object's own transfer syntax: what the peer
			// accepts is what the object is, or it is not sent.
			proposed = append(proposed, dimse.ProposedContext{AbstractSyntax: k.class, TransferSyntaxes: []string{k.ts}})
		}
	}
	cl, err := dimse.Dial(ctx, c.cfg.Addr, dimse.DialConfig{
		CallingAE: calling, CalledAE: c.cfg.CalledAE, Contexts: proposed,
		MaxPDULength: c.cfg.MaxPDULength, Timeout: c.cfg.Timeout, TLS: c.cfg.TLS,
	})
	if err != nil {
		r := c.dialFailure(ctx, err, calling)
		c.log.Debug("C-STORE association not opened", "endpoint", c.String(), "calling_ae", calling, "objects", len(idx), "outcome", r.Outcome.String(), "reason", r.Reason)
		for _, i := range idx {
			out[i] = r
		}
		return
	}
	// From here on ctx's end interrupts whatever the association waits
	// for; the association is then aborted.
	stop := context.AfterFunc(ctx, cl.Interrupt)
	defer stop()
	refused := contextAnswers(cl, keys)
	c.log.Debug("C-STORE association opened", "endpoint", c.String(), "calling_ae", calling,
		"objects", len(idx), "contexts", len(keys), "refused_contexts", countRefused(refused))
	stored := 0
	for n, i := range idx {
		o := objs[i]
		if r := refused[pos[keyOf(o)]]; r != nil {
			out[i] = *r
			continue
		}
		var r Result
		var rest *Result
		if ctx.Err() != nil {
			r = Result{Outcome: Abandoned, Reason: "shutting down"}
			rest = &r
		} else {
			r, rest = c.store(ctx, cl, o)
		}
		out[i] = r
		if r.Outcome == Delivered {
			stored++
		}
		if rest != nil {
			// The association is over (aborted by us, by the peer, or
			// lost): what was not answered gets rest.
			cl.Abort()
			for _, j := range idx[n+1:] {
				if rr := refused[pos[keyOf(objs[j])]]; rr != nil {
					out[j] = *rr
				} else {
					out[j] = *rest
				}
			}
			c.log.Debug("C-STORE association aborted", "endpoint", c.String(), "calling_ae", calling,
				"stored", stored, "objects", len(idx), "sop_instance", o.SOPInstanceUID, "reason", r.Reason)
			return
		}
	}
	if err := cl.Release(); err != nil {
		// Every object has its answer already: a failed release changes
		// none of them.
		level := slog.LevelWarn
		if ctx.Err() != nil {
			level = slog.LevelDebug
		}
		c.log.Log(context.Background(), level, "C-STORE association not released cleanly", "endpoint", c.String(), "calling_ae", calling, "err", err)
		return
	}
	c.log.Debug("C-STORE association released", "endpoint", c.String(), "calling_ae", calling, "stored", stored, "objects", len(idx))
}

// store sends one object and reads the answer. rest is non-nil when the
// association cannot go on: the result for the objects not yet sent.
func (c *CStore) store(ctx context.Context, cl *dimse.Client, o *Object) (r Result, rest *Result) {
	rc, err := o.Open()
	if err != nil {
		// Nothing was sent: the association goes on with the next.
		if errors.Is(err, ErrDamaged) {
			return Result{Outcome: Dead, Damaged: true, Reason: err.Error()}, nil
		}
		return Result{Outcome: Retry, Reason: "cannot read the object from the spool: " + err.Error()}, nil
	}
	defer rc.Close()
	body := &sizedReader{r: rc, size: o.DataSize, left: o.DataSize}
	rsp, err := cl.Store(o.SOPClassUID, o.SOPInstanceUID, o.TransferSyntaxUID, body)
	if err != nil {
		switch {
		case body.err != nil:
			// The spool's copy failed its check or could not be read:
			// Store aborted the association before the last fragment, so
			// the peer never had the object whole. The others go again at
			// once, on a fresh association.
			rest = &Result{Outcome: Abandoned, Reason: "not sent: another object of its batch could not be read from the spool"}
			if errors.Is(body.err, ErrDamaged) {
				return Result{Outcome: Dead, Damaged: true, Reason: body.err.Error()}, rest
			}
			return Result{Outcome: Retry, Reason: "cannot read the object from the spool: " + body.err.Error()}, rest
		case ctx.Err() != nil:
			r = Result{Outcome: Abandoned, Reason: "shutting down"}
			return r, &r
		}
		why := c.connFailure(err)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// A peer that stopped answering is not sent the rest at once.
			return Result{Outcome: Retry, Reason: why}, &Result{Outcome: Retry, Reason: "not sent: the association ended before its turn: " + why}
		}
		// The peer aborted or dropped the association under this object
		// (dcmtk aborts on a data set it cannot take): it waits its
		// backoff, and the others, never sent, go again at once without
		// it, so that one object a peer chokes on does not hold back its
		// batch.
		return Result{Outcome: Retry, Reason: why}, &Result{Outcome: Abandoned, Reason: "not sent: the association ended under another object of its batch: " + why}
	}
	if why := checkResponse(rsp, cl.MessageID(), o); why != "" {
		c.log.Warn("C-STORE destination broke the protocol; association aborted", "endpoint", c.String(), "sop_instance", o.SOPInstanceUID, "problem", why)
		return Result{Outcome: Retry, Reason: "the destination broke the protocol: " + why},
			&Result{Outcome: Abandoned, Reason: "not sent: the association was aborted after a protocol error"}
	}
	return storeResult(rsp), nil
}

// sizedReader hands over exactly the data set's recorded size: a reader
// that ends early or runs on fails with ErrDamaged before the last bytes
// go out (Client.Store sends the last fragment only after its reader says
// EOF). Every error it returns is its own, so that Client.Store never
// takes a read error (io.ErrUnexpectedEOF) for the end of the data set.
type sizedReader struct {
	r    io.Reader
	size int64 // recorded
	left int64
	err  error // the first error returned, EOF aside
}

func (s *sizedReader) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.left == 0 {
		var one [1]byte
		n, err := io.ReadFull(s.r, one[:])
		switch {
		case n > 0:
			s.err = fmt.Errorf("%w: the data set is longer than the %s recorded", ErrDamaged, plural(s.size, "byte"))
		case err == io.EOF:
			return 0, io.EOF
		default:
			s.err = fmt.Errorf("reading the data set: %w", err)
		}
		return 0, s.err
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	switch {
	case err == io.EOF && s.left > 0:
		s.err = fmt.Errorf("%w: the data set ends %s short of its recorded size", ErrDamaged, plural(s.left, "byte"))
	case err != nil && err != io.EOF:
		if errors.Is(err, ErrDamaged) {
			s.err = err
		} else {
			s.err = fmt.Errorf("reading the data set: %w", err)
		}
	}
	if s.err != nil {
		return n, s.err
	}
	return n, nil
}

func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.FormatInt(n, 10) + " " + unit + "s"
}
