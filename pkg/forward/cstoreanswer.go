package forward

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// How a C-STORE destination's answers are read. Its word is checked, not
// trusted: an object is delivered only on a C-STORE-RSP that answers its
// request and says success or one of the warnings of PS3.4 B.2.3 (stored,
// with coercion, elements discarded, or not matching the class); the rest
// follows the rules STOW-RS answers are read by (stowanswer.go).

// storeResult classifies the status of a C-STORE-RSP (PS3.4 B.2.3, PS3.7
// C) that checkResponse accepted.
func storeResult(rsp *dimse.Command) Result {
	st := rsp.Status
	reason := "the destination answered C-STORE status " + statusName(st)
	if rsp.Has&dimse.HasErrorComment != 0 && rsp.ErrorComment != "" {
		reason += ": " + quotePeer(rsp.ErrorComment, 64)
	}
	switch {
	case st == dimse.StatusSuccess:
		return Result{Outcome: Delivered}
	case st == dimse.StatusCoercionOfDataElements, st == dimse.StatusElementsDiscarded, st == dimse.StatusDataSetMismatchWarning:
		return Result{Outcome: Delivered, Reason: "stored with a warning: " + reason}
	case st&0xFF00 == 0xA700, st == statusProcessingFailure:
		// Out of resources, processing failure: the peer may take it later.
		return Result{Outcome: Retry, Reason: reason}
	case st&0xFF00 == 0xA900, st&0xF000 == 0xC000, st == dimse.StatusSOPClassNotSupported, st == dimse.StatusUnrecognizedOperation:
		// The peer refuses this object as it is: sending it again cannot help.
		return Result{Outcome: Dead, Reason: reason}
	case st == dimse.StatusNotAuthorized:
		return Result{Outcome: Pause, Cause: CauseNotAuthorized, Reason: reason + ": check the destination's configuration for our calling AE title"}
	}
	// Anything else (another warning, a pending or cancel status, a code
	// of no service) is not a word that the object is stored.
	return Result{Outcome: Retry, Reason: reason}
}

// statusProcessingFailure is PS3.7 C.5.8 (0110).
const statusProcessingFailure dimse.Status = 0x0110

func statusName(st dimse.Status) string {
	if st == statusProcessingFailure {
		return fmt.Sprintf("0x%04X (Failure: processing failure)", uint16(st))
	}
	return st.String()
}

// checkResponse says what makes rsp no answer to the C-STORE-RQ of o that
// was message msgID (PS3.7 9.3.1.2: the response carries the request's
// message ID, and its affected SOP class and instance when present are
// the request's); "" when it is one.
func checkResponse(rsp *dimse.Command, msgID uint16, o *Object) string {
	switch {
	case rsp.CommandField != dimse.CStoreRSP:
		return fmt.Sprintf("answered a C-STORE-RQ with %v", rsp.CommandField)
	case rsp.Has&dimse.HasMessageIDBeingRespondedTo == 0:
		return "the C-STORE-RSP has no Message ID Being Responded To (0000,0120)"
	case rsp.MessageIDBeingRespondedTo != msgID:
		return fmt.Sprintf("the C-STORE-RSP answers message %d, the request was message %d", rsp.MessageIDBeingRespondedTo, msgID)
	case rsp.Has&dimse.HasStatus == 0:
		return "the C-STORE-RSP has no Status (0000,0900)"
	case rsp.HasDataSet():
		return "the C-STORE-RSP announces a data set"
	case rsp.Has&dimse.HasAffectedSOPInstanceUID != 0 && rsp.AffectedSOPInstanceUID != o.SOPInstanceUID:
		return fmt.Sprintf("the C-STORE-RSP names SOP instance %s, the request %s", quotePeer(rsp.AffectedSOPInstanceUID, 64), o.SOPInstanceUID)
	case rsp.Has&dimse.HasAffectedSOPClassUID != 0 && rsp.AffectedSOPClassUID != o.SOPClassUID:
		return fmt.Sprintf("the C-STORE-RSP names SOP class %s, the request %s", quotePeer(rsp.AffectedSOPClassUID, 64), o.SOPClassUID)
	}
	return ""
}

// quotePeer makes a peer-supplied string fit for a log line or a dead
// letter's reason: cut to n bytes and quoted.
func quotePeer(s string, n int) string {
	if len(s) > n {
		return strconv.Quote(s[:n]) + "..."
	}
	return strconv.Quote(s)
}

// contextAnswers reads the A-ASSOCIATE-AC's answer to each proposed
// context (keys[i] was proposed with ID 2i+1): nil for one accepted in the
// proposed transfer syntax, else the result for its objects.
func contextAnswers(cl *dimse.Client, keys []pcKey) []*Result {
	answers := map[uint8]pdu.PresentationContextAC{}
	for _, pc := range cl.Accepted().PresentationContexts {
		answers[pc.ID] = pc
	}
	out := make([]*Result, len(keys))
	for i, k := range keys {
		pc, ok := answers[uint8(2*i+1)]
		switch {
		case !ok:
			out[i] = &Result{Outcome: Dead, Reason: fmt.Sprintf("the destination does not accept %s in %s (the presentation context got no answer)", uidName(k.class), uidName(k.ts))}
		case pc.Result != pdu.ContextAcceptance:
			out[i] = &Result{Outcome: Dead, Reason: fmt.Sprintf("the destination does not accept %s in %s (%v)", uidName(k.class), uidName(k.ts), pc.Result)}
		case pc.TransferSyntax != k.ts:
			// PS3.8 9.3.3.2: the accepted syntax is one of those proposed.
			// A peer that picks another is broken; nothing is sent on it.
			out[i] = &Result{Outcome: Retry, Reason: fmt.Sprintf("the destination broke the protocol: it accepted %s in %s, which was not proposed (%s was)",
				uidName(k.class), quotePeer(pc.TransferSyntax, 64), uidName(k.ts))}
		}
	}
	return out
}

func countRefused(rs []*Result) int {
	n := 0
	for _, r := range rs {
		if r != nil {
			n++
		}
	}
	return n
}

// uidName is a UID with its registry name, when it has one.
func uidName(u string) string {
	if e, ok := uid.Lookup(u); ok {
		return e.Name + " (" + u + ")"
	}
	return u
}

// dialFailure is the result for the objects of an association that could
// not be opened (PS3.8 9.3.4: a permanent rejection needs an operator, a
// transient one passes).
func (c *CStore) dialFailure(ctx context.Context, err error, calling string) Result {
	var rj *dimse.RejectedError
	switch {
	case errors.As(err, &rj):
		what := fmt.Sprintf("%v, %s", rj.Source, pdu.RejectReasonString(rj.Source, rj.Reason))
		if rj.Result == pdu.RejectTransient {
			return Result{Outcome: Retry, Reason: "the destination rejected the association for now (" + what + ")"}
		}
		hint := "check the destination's configuration"
		if rj.Source == pdu.RejectSourceUser {
			switch rj.Reason {
			case pdu.RejectCalledAENotRecognized:
				hint = fmt.Sprintf("is %q the destination's AE title?", c.cfg.CalledAE)
			case pdu.RejectCallingAENotRecognized:
				hint = fmt.Sprintf("the destination does not know the calling AE title %q", calling)
			}
		}
		return Result{Outcome: Pause, Cause: CauseRejected, Reason: "the destination rejected the association (" + what + "): " + hint}
	case ctx.Err() != nil:
		return Result{Outcome: Abandoned, Reason: "shutting down"}
	}
	return Result{Outcome: Retry, Reason: "cannot open an association with the destination: " + c.connFailure(err)}
}

// connFailure describes an association that failed under way.
func (c *CStore) connFailure(err error) string {
	var ab *dimse.AbortedError
	switch {
	case errors.As(err, &ab):
		return fmt.Sprintf("the destination aborted the association (source %v, reason %v)", ab.Source, ab.Reason)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Sprintf("the destination did not answer within %v", c.cfg.Timeout)
	}
	return err.Error()
}
