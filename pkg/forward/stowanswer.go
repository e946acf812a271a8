package forward

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// An answer is read only up to a bound that grows with the instances of the
// request (a reference is a few hundred bytes, a retrieve URL included)
// and never passes maxAnswer: a proxy or a broken endpoint that answers a
// huge body (a 10 GB download announced in Content-Length) costs each
// worker at most that much memory, and such an answer is not a STOW-RS
// response anyway.
const (
	answerBase        = 64 << 10
	answerPerInstance = 4 << 10
	maxAnswer         = 4 << 20
)

// answerLimit is how much of an answer to a request of n instances is read.
func answerLimit(n int) int64 {
	return min(int64(answerBase)+int64(n)*answerPerInstance, maxAnswer)
}

// stowAnswer is a STOW-RS response (PS3.18 10.5.3): the HTTP status and,
// when the body is a DICOM response, per SOP instance whether it was
// stored (ReferencedSOPSequence, maybe with a WarningReason) or not
// (FailedSOPSequence with a FailureReason).
type stowAnswer struct {
	status     int
	statusText string
	retryAfter time.Duration
	mediaType  string            // of the body, as the endpoint declared it ("" when none)
	dicom      bool              // the body is a DICOM response (JSON or XML) we could read
	notDICOM   string            // why the body is not one, for the reasons
	stored     map[string]uint16 // SOP Instance UID -> warning reason (0: none)
	failed     map[string]uint16 // SOP Instance UID -> failure reason
}

// readAnswer reads at most limit bytes of the response and parses them.
// The rest of an answer too large to be a STOW-RS response is not read:
// the caller closes the body, which drops the connection.
func readAnswer(resp *http.Response, limit int64) (*stowAnswer, error) {
	a := &stowAnswer{status: resp.StatusCode, statusText: resp.Status, stored: map[string]uint16{}, failed: map[string]uint16{}}
	a.retryAfter, _ = retryAfter(resp)
	a.mediaType, _, _ = mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.ContentLength > limit {
		a.notDICOM = fmt.Sprintf("a body of %d bytes, more than a STOW-RS response to this request can be (%d)", resp.ContentLength, limit)
		return a, nil
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength)) // at most limit: no doubling while reading
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading the STOW-RS response: %w", err)
	}
	if n > limit {
		a.notDICOM = fmt.Sprintf("a body of more than %d bytes, more than a STOW-RS response to this request can be", limit)
		return a, nil
	}
	body := buf.Bytes()
	switch a.mediaType {
	case "application/dicom+json", "application/json":
		err = a.parseJSON(body)
	case "application/dicom+xml", "application/xml", "text/xml":
		err = a.parseXML(body)
	case "":
		// Orthanc 1.10 answers a STOW-RS it refuses in part (HTTP 400)
		// with a DICOM JSON body and no Content-Type: such a body counts if
		// it parses strictly as a DICOM response.
		switch trimmed := bytes.TrimLeft(body, " \t\r\n"); {
		case len(trimmed) == 0:
			a.notDICOM = "an empty body"
			return a, nil
		case trimmed[0] == '{':
			err = a.parseJSON(body)
		case trimmed[0] == '<':
			err = a.parseXML(body)
		default:
			a.notDICOM = "a body without a Content-Type"
			return a, nil
		}
		if err != nil {
			a.stored, a.failed = map[string]uint16{}, map[string]uint16{}
			a.notDICOM = fmt.Sprintf("a body without a Content-Type that is not a DICOM response (%v)", err)
			return a, nil
		}
		a.dicom = true
		return a, nil
	default:
		a.notDICOM = "a body of type " + strconv.Quote(a.mediaType)
		return a, nil
	}
	if err != nil {
		a.stored, a.failed = map[string]uint16{}, map[string]uint16{}
		a.notDICOM = fmt.Sprintf("a %s body that is not a DICOM response (%v)", a.mediaType, err)
		return a, nil
	}
	a.dicom = true
	return a, nil
}

// dicomJSON is an attribute of the DICOM JSON model (PS3.18 F.2).
type dicomJSON map[string]struct {
	VR    string            `json:"vr"`
	Value []json.RawMessage `json:"Value"`
}

// parseJSON reads a DICOM JSON response (PS3.18 F.2). It is strict about
// the shape of the top level — an object whose every key is a tag of
// eight hexadecimal digits and whose every attribute has a VR — because a
// JSON error page ({"error": "..."}) from a proxy must not read as an
// answer that merely leaves every instance out.
func (a *stowAnswer) parseJSON(body []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return err
	}
	if raw == nil {
		return errors.New("null")
	}
	for tag := range raw {
		if !isTag(tag) {
			return fmt.Errorf("key %q is not a DICOM tag", truncate(tag, 40))
		}
	}
	var top dicomJSON
	if err := json.Unmarshal(body, &top); err != nil {
		return err
	}
	for tag, attr := range top {
		if len(attr.VR) != 2 {
			return fmt.Errorf("attribute %s has no VR", tag)
		}
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

func isTag(s string) bool {
	if len(s) != 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
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

// nativeAttr is a DicomAttribute of the Native DICOM Model (PS3.19
// A.1), as far as a STOW-RS response needs it.
type nativeAttr struct {
	Tag    string       `xml:"tag,attr"`
	VR     string       `xml:"vr,attr"`
	Values []string     `xml:"Value"`
	Items  []nativeItem `xml:"Item"`
}

type nativeItem struct {
	Attrs []nativeAttr `xml:"DicomAttribute"`
}

// parseXML reads a response in the Native DICOM Model (PS3.19 A.1, what
// PS3.18 10.5.3 calls application/dicom+xml).
func (a *stowAnswer) parseXML(body []byte) error {
	var top struct {
		XMLName xml.Name
		Attrs   []nativeAttr `xml:"DicomAttribute"`
	}
	if err := xml.Unmarshal(body, &top); err != nil {
		return err
	}
	if top.XMLName.Local != "NativeDicomModel" {
		return fmt.Errorf("root element <%s>, not <NativeDicomModel>", truncate(top.XMLName.Local, 40))
	}
	find := func(attrs []nativeAttr, tag string) *nativeAttr {
		for i := range attrs {
			if strings.EqualFold(attrs[i].Tag, tag) {
				return &attrs[i]
			}
		}
		return nil
	}
	str := func(it nativeItem, tag string) string {
		if at := find(it.Attrs, tag); at != nil && len(at.Values) > 0 {
			return strings.TrimRight(strings.TrimSpace(at.Values[0]), "\x00 ")
		}
		return ""
	}
	us := func(it nativeItem, tag string) uint16 {
		n, _ := strconv.ParseUint(str(it, tag), 10, 16)
		return uint16(n)
	}
	if seq := find(top.Attrs, "00081199"); seq != nil {
		for _, it := range seq.Items {
			if inst := str(it, "00081155"); inst != "" {
				a.stored[inst] = us(it, "00081196")
			}
		}
	}
	if seq := find(top.Attrs, "00081198"); seq != nil {
		for _, it := range seq.Items {
			if inst := str(it, "00081155"); inst != "" {
				a.failed[inst] = us(it, "00081197")
			}
		}
	}
	return nil
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
func (a *stowAnswer) results(objs []*Object) []Result {
	out := a.classify(objs)
	for i := range out {
		out[i].HTTPStatus = a.status
	}
	return out
}

func (a *stowAnswer) classify(objs []*Object) []Result {
	c := a.status
	switch {
	case c >= 200 && c < 300 && !a.dicom:
		// PS3.18 10.5.3: a STOW-RS answer says per instance what became of
		// it. A 2xx without one is not the endpoint speaking: a login page
		// of an SSO proxy whose session expired, a proxy's own page, a base
		// URL that points at something else. Nothing is delivered on its
		// word; the destination is paused until an operator looks.
		return all(objs, Result{Outcome: Pause, Cause: CauseNotDICOM, Reason: fmt.Sprintf(
			"the endpoint answered %s with %s, not a DICOM STOW-RS response: a login page or a proxy in front of it? check the base URL and the credentials",
			a.statusText, a.notDICOM)})
	case c >= 200 && c < 300 || c == http.StatusConflict && a.dicom || a.perInstance(c):
		out := make([]Result, len(objs))
		for i, o := range objs {
			out[i] = a.instance(o.SOPInstanceUID)
		}
		return out
	case c == http.StatusConflict:
		return all(objs, Result{Outcome: Retry, Reason: fmt.Sprintf("STOW-RS answered %s with %s, which says nothing of the instances", a.statusText, a.notDICOM)})
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return all(objs, Result{Outcome: Retry, Reason: "STOW-RS answered " + a.statusText, RetryAfter: a.retryAfter})
	case c == http.StatusRequestEntityTooLarge:
		if len(objs) > 1 {
			return all(objs, Result{Outcome: Retry, Alone: true, Reason: "STOW-RS answered " + a.statusText + " for a batch"})
		}
		return all(objs, Result{Outcome: Dead, Reason: "the endpoint refuses this object as too large (" + a.statusText + ")"})
	case c == http.StatusUnauthorized:
		// Deliver has already tried once more with refreshed credentials.
		return all(objs, Result{Outcome: Pause, Cause: CauseCredentials, Reason: "the endpoint answered " + a.statusText + " (credentials refused even when refreshed): check the credentials"})
	case c == http.StatusForbidden:
		return all(objs, Result{Outcome: Pause, Cause: CauseCredentials, Reason: "the endpoint answered " + a.statusText + ": check the credentials and their rights"})
	case c >= 300 && c < 400:
		return all(objs, Result{Outcome: Pause, Cause: CauseRedirect, Reason: "the endpoint redirects (" + a.statusText + ") to another origin or with another method: check the base URL"})
	default: // 400, 404, 415 and other client errors: our request or configuration
		return all(objs, Result{Outcome: Pause, Cause: CauseClientError, Reason: "the endpoint answered " + a.statusText + ": check the base URL and the endpoint's configuration"})
	}
}

// perInstance: some endpoints (Orthanc) answer 400 when one instance of a
// request is refused, yet say per instance what they stored and what they
// refused and why. Such an answer shows the request was understood — it is
// not the configuration problem a bare 400 suggests — so it is read
// instance by instance, like a 409.
func (a *stowAnswer) perInstance(code int) bool {
	return code == http.StatusBadRequest && a.dicom && len(a.stored)+len(a.failed) > 0
}

// instance reads the answer for one SOP instance of a DICOM answer: it is
// delivered only when the answer lists it as stored (or refuses it as a
// duplicate the endpoint already has).
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
	// Not a word on it, though the answer is well-formed: an endpoint that
	// drops instances, or a proxy that mixes up answers. Retried; after
	// several such answers in a row the forwarder dead-letters it.
	return Result{Outcome: Retry, Unconfirmed: true, Reason: fmt.Sprintf("STOW-RS answered %s without listing this instance as stored or failed", a.statusText)}
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
		return Result{Outcome: Pause, Cause: CauseNotAuthorized, Reason: reason}
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
