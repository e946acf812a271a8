package main

import (
	"errors"
	"log/slog"
	"time"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// storeHandler connects the DIMSE layer to the spool: it is where spool
// outcomes become DIMSE statuses (PS3.4 B.2.3).
type storeHandler struct {
	spool  *spool.Spool
	notify func(id string) // tells the forwarder; never blocks
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
	e, err := s.w.Commit()
	if err != nil {
		return dimse.Committed{}, statusFor(err)
	}
	s.h.log.Info("object spooled", "id", e.ID, "assoc", s.req.AssociationID, "calling_ae", s.req.CallingAE,
		"sop_class", s.req.SOPClassUID, "sop_instance", s.req.SOPInstanceUID, "study", e.StudyInstanceUID, "transfer_syntax", s.req.TransferSyntaxUID,
		"bytes", e.Size, "duration", time.Since(s.start).Round(time.Microsecond))
	if s.h.notify != nil {
		s.h.notify(e.ID)
	}
	return dimse.Committed{Nonconforming: e.Nonconforming}, nil
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
