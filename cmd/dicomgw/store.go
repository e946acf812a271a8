package main

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/route"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// storeHandler connects the DIMSE layer to the spool: it is where spool
// outcomes become DIMSE statuses (PS3.4 B.2.3), and where each object is
// routed, between the walk of its data set and its commit.
type storeHandler struct {
	spool  *spool.Spool
	router *router // where objects go (replaced on SIGHUP)
	log    *slog.Logger
}

func (h *storeHandler) BeginStore(req *dimse.StoreRequest) (dimse.StoreWriter, error) {
	w, err := h.spool.Create(spool.Meta{
		SOPClassUID:       req.SOPClassUID,
		SOPInstanceUID:    req.SOPInstanceUID,
		TransferSyntaxUID: req.TransferSyntaxUID,
		CallingAE:         req.CallingAE,
		CalledAE:          req.CalledAE,
		RemoteAddr:        req.RemoteAddr,
		AssociationID:     req.AssociationID,
	})
	if err != nil {
		return nil, statusFor(err)
	}
	return &storeWriter{h: h, req: req, w: w, start: time.Now()}, nil
}

type storeWriter struct {
	h     *storeHandler
	req   *dimse.StoreRequest
	w     *spool.Writer
	start time.Time
}

func (s *storeWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		return n, statusFor(err)
	}
	return n, nil
}

func (s *storeWriter) Commit() (dimse.Committed, error) {
	rt := s.h.router.current()
	ex, err := s.w.Examine(rt.tags)
	if err != nil {
		return dimse.Committed{}, statusFor(err)
	}
	dests := rt.route(route.Object{CalledAE: s.req.CalledAE, CallingAE: s.req.CallingAE, Peer: route.PeerAddr(s.req.RemoteAddr), Values: ex.Summary.Values})
	if len(dests) == 0 {
		s.w.Abort()
		s.h.router.unrouted.Inc()
		// Refused before it is stored: an object is never acknowledged
		// and then dropped. PS3.7 C.4.2: 0124 Refused: not authorized.
		return dimse.Committed{}, &dimse.StatusError{Status: dimse.StatusNotAuthorized, Comment: "no route for this object",
			Err: errors.New("no route matches the object, and --unrouted refuses it")}
	}
	d, err := s.w.CommitTo(dests)
	if err != nil {
		return dimse.Committed{}, statusFor(err)
	}
	s.h.log.Info("object spooled", "id", d.ID, "assoc", s.req.AssociationID, "calling_ae", s.req.CallingAE,
		"sop_class", s.req.SOPClassUID, "sop_instance", s.req.SOPInstanceUID, "study", d.StudyInstanceUID, "transfer_syntax", s.req.TransferSyntaxUID,
		"bytes", d.Size, "destinations", strings.Join(dests, ","), "duration", time.Since(s.start).Round(time.Microsecond))
	rt.committed(&d)
	return dimse.Committed{Nonconforming: d.Nonconforming}, nil
}

func (s *storeWriter) Abort() { s.w.Abort() }

// statusFor maps a spool commit failure to the status the sender gets.
func statusFor(err error) error {
	var mm *spool.MismatchError
	var ue *spool.UIDError
	switch {
	case errors.As(err, &ue):
		// PS3.4 B.2.3: a UID the policy refuses cannot be understood.
		return &dimse.StatusError{Status: dimse.StatusCannotUnderstand, Comment: ue.Attribute.String() + " " + ue.Problem.String(), Err: err}
	case errors.As(err, &mm):
		comment := mm.Attribute + " mismatch"
		if mm.DataSet == "" {
			comment = "data set has no " + mm.Attribute
		}
		return &dimse.StatusError{Status: dimse.StatusDataSetDoesNotMatchClass, Comment: comment, Err: err}
	case errors.Is(err, spool.ErrMalformed):
		return &dimse.StatusError{Status: dimse.StatusCannotUnderstand, Comment: "data set cannot be parsed", Err: err}
	case errors.Is(err, spool.ErrFull):
		return &dimse.StatusError{Status: dimse.StatusOutOfResources, Comment: "gateway spool full, retry later", Err: err}
	case errors.Is(err, spool.ErrTooLarge):
		return &dimse.StatusError{Status: dimse.StatusOutOfResources, Comment: "object larger than the gateway accepts", Err: err}
	}
	return &dimse.StatusError{Status: dimse.StatusOutOfResources, Comment: "spool write failed", Err: err}
}
