package forward

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxAnswer bounds how much of a STOW-RS answer is read: a reference per
// instance is a few hundred bytes.
const maxAnswer = 16 << 20

// stowAnswer is a STOW-RS response (PS3.18 10.5.3): the HTTP status and,
// per SOP instance, whether it was stored (ReferencedSOPSequence, maybe
// with a WarningReason) or not (FailedSOPSequence with a FailureReason).
type stowAnswer struct {
	status     int
	statusText string
	retryAfter time.Duration
	parsed     bool              // the body was a DICOM JSON response
	stored     map[string]uint16 // SOP Instance UID -> warning reason (0: none)
	failed     map[string]uint16 // SOP Instance UID -> failure reason
}

// readAnswer reads and parses the response.
func readAnswer(resp *http.Response) (*stowAnswer, error) {
	a := &stowAnswer{status: resp.StatusCode, statusText: resp.Status, stored: map[string]uint16{}, failed: map[string]uint16{}}
	a.retryAfter, _ = retryAfter(resp)
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("reading the STOW-RS response: %w", err)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/dicom+json" || mt == "application/json" || len(body) > 0 && body[0] == '{' {
		a.parsed = a.parse(body) == nil
	}
	return a, nil
}

// dicomJSON is an attribute of the DICOM JSON model (PS3.18 F.2).
type dicomJSON map[string]struct {
	VR    string            `json:"vr"`
	Value []json.RawMessage `json:"Value"`
}

func (a *stowAnswer) parse(body []byte) error {
	var top dicomJSON
	if err := json.Unmarshal(body, &top); err != nil {
		return err
	}
	items := func(tag string) []dicomJSON {
		var out []dicomJSON
		for _, raw := range top[tag].Value {
			var it dicomJSON
			if json.Unmarshal(raw, &it) == nil {
				out = append(out, it)
			}
		}
		return out
	}
	for _, it := range items("00081199") { // ReferencedSOPSequence
		if inst := it.str("00081155"); inst != "" {
			a.stored[inst] = it.us("00081196") // WarningReason
		}
	}
	for _, it := range items("00081198") { // FailedSOPSequence
		if inst := it.str("00081155"); inst != "" {
			a.failed[inst] = it.us("00081197") // FailureReason
		}
	}
	return nil
}

func (d dicomJSON) str(tag string) string {
	v := d[tag].Value
	if len(v) == 0 {
		return ""
	}
	var s string
	json.Unmarshal(v[0], &s)
	return strings.TrimRight(s, "\x00 ")
}

func (d dicomJSON) us(tag string) uint16 {
	v := d[tag].Value
	if len(v) == 0 {
		return 0
	}
	var n uint16
	json.Unmarshal(v[0], &n)
	return n
}

// retryAfter reads a Retry-After header (seconds or an HTTP date).
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp == nil {
		return 0, false
	}
	h := resp.Header.Get("Retry-After")
	if h == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(h, 10, 64); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// results reads the answer object by object, following the forwarder's
// rules (../shared/reference/dicom-notes.md, "A forwarder's reading of it").
func (a *stowAnswer) results(objs []*Object, s *STOW) []Result {
	out := a.classify(objs, s)
	for i := range out {
		out[i].HTTPStatus = a.status
	}
	return out
}

func (a *stowAnswer) classify(objs []*Object, s *STOW) []Result {
	c := a.status
	switch {
	case c == http.StatusOK || c == http.StatusAccepted || c == http.StatusConflict || a.perInstance(c):
		out := make([]Result, len(objs))
		for i, o := range objs {
			out[i] = a.instance(o.SOPInstanceUID)
		}
		return out
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return all(objs, Result{Outcome: Retry, Reason: "STOW-RS answered " + a.statusText, RetryAfter: a.retryAfter})
	case c == http.StatusRequestEntityTooLarge:
		if len(objs) > 1 {
			return all(objs, Result{Outcome: Retry, Alone: true, Reason: "STOW-RS answered " + a.statusText + " for a batch"})
		}
		return all(objs, Result{Outcome: Dead, Reason: "the endpoint refuses this object as too large (" + a.statusText + ")"})
	case c == http.StatusUnauthorized:
		// Deliver has already tried once more with refreshed credentials.
		return all(objs, Result{Outcome: Pause, Reason: "the endpoint answered " + a.statusText + " (credentials refused even when refreshed): check the credentials"})
	case c == http.StatusForbidden:
		return all(objs, Result{Outcome: Pause, Reason: "the endpoint answered " + a.statusText + ": check the credentials and their rights"})
	case c >= 300 && c < 400:
		return all(objs, Result{Outcome: Pause, Reason: "the endpoint redirects (" + a.statusText + ") to another origin or with another method: check the base URL"})
	default: // 400, 404, 415 and other client errors: our request or configuration
		return all(objs, Result{Outcome: Pause, Reason: "the endpoint answered " + a.statusText + ": check the base URL and the endpoint's configuration"})
	}
}

// perInstance: some endpoints (Orthanc) answer 400 when one instance of a
// request is refused, yet say per instance what they stored and what they
// refused and why. Such an answer shows the request was understood — it is
// not the configuration problem a bare 400 suggests — so it is read
// instance by instance, like a 409.
func (a *stowAnswer) perInstance(code int) bool {
	return code == http.StatusBadRequest && a.parsed && len(a.stored)+len(a.failed) > 0
}

// instance reads the answer for one SOP instance of a 200/202/409 answer.
func (a *stowAnswer) instance(sop string) Result {
	if w, ok := a.stored[sop]; ok {
		if w != 0 {
			return Result{Outcome: Delivered, Reason: fmt.Sprintf("stored with warning 0x%04X", w)}
		}
		return Result{Outcome: Delivered}
	}
	if f, ok := a.failed[sop]; ok {
		return failureResult(f)
	}
	if a.status == http.StatusOK {
		// PS3.18 10.5.3: 200 means every instance was stored.
		return Result{Outcome: Delivered}
	}
	return Result{Outcome: Retry, Reason: fmt.Sprintf("STOW-RS answered %s without a word on this instance", a.statusText)}
}

// failureResult classifies a FailureReason (PS3.18 Table 10.5.3-1 and the
// C-STORE statuses of PS3.4 B.2.3 it borrows).
func failureResult(code uint16) Result {
	reason := fmt.Sprintf("the endpoint refused the instance: FailureReason 0x%04X (%s)", code, failureName(code))
	switch {
	case code&0xFF00 == 0xA700, code == 0x0110, code == 0x0212:
		return Result{Outcome: Retry, Reason: reason}
	case code == 0x0111:
		// Duplicate SOP instance: the endpoint already has it.
		return Result{Outcome: Delivered, Reason: reason}
	case code == 0x0124:
		return Result{Outcome: Pause, Reason: reason}
	case code == 0xC122, code == 0x0122, code&0xFF00 == 0xA900, code&0xF000 == 0xC000:
		return Result{Outcome: Dead, Reason: reason}
	}
	return Result{Outcome: Retry, Reason: reason}
}

func failureName(code uint16) string {
	switch {
	case code == 0x0110:
		return "processing failure"
	case code == 0x0111:
		return "duplicate SOP instance"
	case code == 0x0122:
		return "SOP class not supported"
	case code == 0x0124:
		return "not authorized"
	case code == 0x0212:
		return "mistyped argument"
	case code == 0xC122:
		return "referenced transfer syntax not supported"
	case code&0xFF00 == 0xA700:
		return "out of resources"
	case code&0xFF00 == 0xA900:
		return "data set does not match SOP class"
	case code&0xF000 == 0xC000:
		return "cannot understand"
	}
	return "unknown"
}
