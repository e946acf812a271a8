// Package qr answers DIMSE C-FIND (PS3.4 C.4.1) from a DICOMweb server's
// QIDO-RS (PS3.18 10.6): it reads a C-FIND identifier, turns its matching
// keys into QIDO-RS query parameters and its return keys into includefield,
// pages through the results (limit/offset) so that a query matching more
// than the server's page is answered whole, and encodes each QIDO-RS JSON
// result (PS3.18 F.2) as a C-FIND response identifier in the negotiated
// transfer syntax.
package qr

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/pkg/dict"
)

// Information models (the FIND SOP classes).
const (
	PatientRoot = "1.2.840.10008.5.1.4.1.2.1.1"
	StudyRoot   = "1.2.840.10008.5.1.4.1.2.2.1"
)

// Tags the translation treats specially.
const (
	tagSpecificCharacterSet = 0x00080005
	tagQueryRetrieveLevel   = 0x00080052
	tagPatientID            = 0x00100020
	tagStudyInstanceUID     = 0x0020000D
	tagSeriesInstanceUID    = 0x0020000E
	tagSOPInstanceUID       = 0x00080018
)

// Key is one element of a C-FIND identifier: a matching key when it has a
// value, a return key when it has none.
type Key struct {
	Tag   uint32
	VR    string
	Value string // trimmed of padding; "" for a return key
}

// Query is a C-FIND identifier, read.
type Query struct {
	Model string
	Level string // PATIENT, STUDY, SERIES, IMAGE
	Keys  []Key  // in tag order, QueryRetrieveLevel and Specific Character Set left out
}

// Error is an identifier the SCP refuses, with the C-FIND status for it.
type Error struct {
	Status uint16 // 0xA900 identifier does not match SOP class, 0xC000 unable to process
	Reason string
}

func (e *Error) Error() string { return "qr: " + e.Reason }

func mismatch(format string, args ...any) error {
	return &Error{Status: 0xA900, Reason: fmt.Sprintf(format, args...)}
}

// ParseQuery reads a C-FIND identifier in Implicit or Explicit VR Little
// Endian. Sequence keys are not supported as matching keys and are left
// out (their items are skipped); text values are taken as UTF-8 or ASCII
// (a Specific Character Set other than ISO_IR 192 or none is refused: its
// values could not be matched correctly against QIDO-RS, which is UTF-8).
func ParseQuery(model, ts string, data []byte) (*Query, error) {
	explicit := false
	switch ts {
	case "1.2.840.10008.1.2":
	case "1.2.840.10008.1.2.1":
		explicit = true
	default:
		return nil, mismatch("transfer syntax %s", ts)
	}
	if model != PatientRoot && model != StudyRoot {
		return nil, mismatch("information model %s", model)
	}
	q := &Query{Model: model}
	for off := 0; off < len(data); {
		if len(data)-off < 8 {
			return nil, mismatch("truncated identifier at offset %d", off)
		}
		tag := uint32(binary.LittleEndian.Uint16(data[off:]))<<16 | uint32(binary.LittleEndian.Uint16(data[off+2:]))
		var vr string
		var n uint32
		hdr := 8
		if explicit {
			vr = string(data[off+4 : off+6])
			switch vr {
			case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
				if len(data)-off < 12 {
					return nil, mismatch("truncated identifier at offset %d", off)
				}
				n, hdr = binary.LittleEndian.Uint32(data[off+8:]), 12
			default:
				n = uint32(binary.LittleEndian.Uint16(data[off+6:]))
			}
		} else {
			n = binary.LittleEndian.Uint32(data[off+4:])
			if e, ok := dict.ByTag(tag); ok {
				vr, _, _ = strings.Cut(e.VR, " ")
			}
		}
		off += hdr
		if vr == "SQ" || n == 0xFFFFFFFF {
			end, err := skipSequence(data, off, n, explicit)
			if err != nil {
				return nil, err
			}
			off = end
			continue
		}
		if uint64(n) > uint64(len(data)-off) {
			return nil, mismatch("element (%04X,%04X) overruns the identifier", tag>>16, tag&0xFFFF)
		}
		v := strings.TrimRight(string(data[off:off+int(n)]), " \x00")
		off += int(n)
		if tag&0xFFFF == 0 || tag>>16 == 0x0002 {
			continue // group lengths
		}
		switch tag {
		case tagQueryRetrieveLevel:
			q.Level = strings.TrimSpace(v)
			continue
		case tagSpecificCharacterSet:
			if v != "" && v != "ISO_IR 192" && v != "ISO_IR 6" {
				return nil, &Error{Status: 0xC000, Reason: fmt.Sprintf("Specific Character Set %q: only ASCII and ISO_IR 192 (UTF-8) queries are answered", v)}
			}
			continue
		}
		if vr == "" {
			vr = "UN"
		}
		q.Keys = append(q.Keys, Key{Tag: tag, VR: vr, Value: v})
	}
	switch q.Level {
	case "STUDY", "SERIES", "IMAGE":
	case "PATIENT":
		if model != PatientRoot {
			return nil, mismatch("level PATIENT in the Study Root model")
		}
	case "":
		return nil, mismatch("no Query/Retrieve Level (0008,0052)")
	default:
		return nil, mismatch("Query/Retrieve Level %q", q.Level)
	}
	slices.SortFunc(q.Keys, func(a, b Key) int { return int(int64(a.Tag) - int64(b.Tag)) })
	return q, nil
}

// skipSequence returns the offset after a sequence's value.
func skipSequence(data []byte, off int, n uint32, explicit bool) (int, error) {
	if n != 0xFFFFFFFF {
		if uint64(n) > uint64(len(data)-off) {
			return 0, mismatch("sequence overruns the identifier")
		}
		return off + int(n), nil
	}
	depth := 1
	for off+8 <= len(data) {
		tag := uint32(binary.LittleEndian.Uint16(data[off:]))<<16 | uint32(binary.LittleEndian.Uint16(data[off+2:]))
		l := binary.LittleEndian.Uint32(data[off+4:])
		switch tag {
		case 0xFFFEE0DD:
			depth--
			off += 8
			if depth == 0 {
				return off, nil
			}
			continue
		case 0xFFFEE000, 0xFFFEE00D:
			off += 8
			if tag == 0xFFFEE000 && l != 0xFFFFFFFF {
				if uint64(l) > uint64(len(data)-off) {
					return 0, mismatch("item overruns the identifier")
				}
				off += int(l)
			}
			continue
		}
		// An element inside an undefined-length item.
		hdr := 8
		if explicit {
			switch string(data[off+4 : off+6]) {
			case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
				if off+12 > len(data) {
					return 0, mismatch("truncated identifier")
				}
				l, hdr = binary.LittleEndian.Uint32(data[off+8:]), 12
			default:
				l = uint32(binary.LittleEndian.Uint16(data[off+6:]))
			}
		}
		off += hdr
		if l == 0xFFFFFFFF {
			depth++
			if depth > 16 {
				return 0, mismatch("sequences nested too deep")
			}
			continue
		}
		if uint64(l) > uint64(len(data)-off) {
			return 0, mismatch("element overruns the identifier")
		}
		off += int(l)
	}
	return 0, mismatch("sequence without its delimiter")
}

// resource is the QIDO-RS path of a level.
func (q *Query) resource() string {
	switch q.Level {
	case "SERIES":
		return "series"
	case "IMAGE":
		return "instances"
	}
	return "studies" // PATIENT is answered from the studies
}

// Params are the QIDO-RS query parameters: a matching key's value (a UID
// list's backslashes become commas), and includefield for every key.
func (q *Query) Params() url.Values {
	p := url.Values{}
	for _, k := range q.Keys {
		name := fmt.Sprintf("%08X", k.Tag)
		if k.Value != "" {
			v := k.Value
			if k.VR == "UI" {
				v = strings.ReplaceAll(v, `\`, ",")
			}
			p.Add(name, v)
		}
		p.Add("includefield", name)
	}
	return p
}

// Authorizer authorizes a request (forward.Credentials does).
type Authorizer interface {
	Authorize(ctx context.Context, req *http.Request) error
}

// Client queries a DICOMweb server.
type Client struct {
	Base     *url.URL // service root; its query string (KHEOPS ?album=) is kept
	HTTP     *http.Client
	Auth     Authorizer // nil: none
	PageSize int        // results asked per request (limit)
	// Timeout bounds each request; MaxPage bounds a page's body.
	Timeout   time.Duration
	MaxPage   int64
	UserAgent string
}

// ErrEndpoint wraps the errors of a server that fails or answers garbage.
var ErrEndpoint = errors.New("qr: QIDO-RS endpoint")

// Find runs q against the server, calling emit with each match's
// identifier encoded in ts. PATIENT-level queries are answered from the
// studies, one match per distinct Patient ID.
func (c *Client) Find(ctx context.Context, q *Query, ts string, emit func([]byte) error) error {
	params := q.Params()
	seenPatients := map[string]bool{}
	return c.pages(ctx, q.resource(), params, func(obj map[string]attr) error {
		if q.Level == "PATIENT" {
			id := obj[fmt.Sprintf("%08X", tagPatientID)].text()
			if seenPatients[id] {
				return nil
			}
			seenPatients[id] = true
		}
		b, err := Encode(q, obj, ts)
		if err != nil {
			return err
		}
		return emit(b)
	})
}

// pages asks for successive pages until an empty one, so that a server
// that caps the page below PageSize still gives everything.
func (c *Client) pages(ctx context.Context, resource string, params url.Values, each func(map[string]attr) error) error {
	limit := max(c.PageSize, 1)
	var firstPrev string
	for offset, page := 0, 0; ; page++ {
		if page > 100000 {
			return fmt.Errorf("%w: more than %d pages", ErrEndpoint, page)
		}
		objs, err := c.page(ctx, resource, params, limit, offset)
		if err != nil {
			return err
		}
		if len(objs) == 0 {
			return nil
		}
		// A server that ignores offset would send the first page forever.
		first, _ := json.Marshal(objs[0])
		if page > 0 && string(first) == firstPrev {
			return fmt.Errorf("%w: the same page again at offset %d (offset not supported?)", ErrEndpoint, offset)
		}
		firstPrev = string(first)
		for _, o := range objs {
			if err := each(o); err != nil {
				return err
			}
		}
		offset += len(objs)
	}
}

func (c *Client) page(ctx context.Context, resource string, params url.Values, limit, offset int) ([]map[string]attr, error) {
	u := *c.Base
	u.Path = strings.TrimRight(u.Path, "/") + "/" + resource
	q := u.Query()
	for k, vs := range params {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	q.Set("limit", strconv.Itoa(limit))
	q.Set("offset", strconv.Itoa(offset))
	u.RawQuery = q.Encode()
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/dicom+json")
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	if c.Auth != nil {
		if err := c.Auth.Authorize(ctx, req); err != nil {
			return nil, fmt.Errorf("%w: credentials: %v", ErrEndpoint, err)
		}
	}
	rsp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEndpoint, redact(err))
	}
	defer rsp.Body.Close()
	switch {
	case rsp.StatusCode == http.StatusNoContent:
		return nil, nil
	case rsp.StatusCode != http.StatusOK:
		io.Copy(io.Discard, io.LimitReader(rsp.Body, 64<<10))
		return nil, fmt.Errorf("%w: HTTP %d", ErrEndpoint, rsp.StatusCode)
	}
	maxPage := c.MaxPage
	if maxPage <= 0 {
		maxPage = 64 << 20
	}
	body, err := io.ReadAll(io.LimitReader(rsp.Body, maxPage+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEndpoint, err)
	}
	if int64(len(body)) > maxPage {
		return nil, fmt.Errorf("%w: a page longer than %d bytes", ErrEndpoint, maxPage)
	}
	var objs []map[string]attr
	if err := json.Unmarshal(body, &objs); err != nil {
		return nil, fmt.Errorf("%w: not a DICOM JSON answer: %v", ErrEndpoint, err)
	}
	return objs, nil
}

// redact drops the query string from an error that quotes the URL: query
// values can be UIDs or names a log must not carry.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery = ""
			return fmt.Errorf("%s %s: %v", ue.Op, u.Redacted(), ue.Err)
		}
	}
	return err
}

// attr is one attribute of the DICOM JSON model (PS3.18 F.2.2).
type attr struct {
	VR           string            `json:"vr"`
	Value        []json.RawMessage `json:"Value"`
	InlineBinary string            `json:"InlineBinary"`
}

// text is the attribute's value as DICOM text: values joined with
// backslashes, a person name by its alphabetic group (with ideographic
// and phonetic when present), numbers as JSON wrote them.
func (a attr) text() string {
	parts := make([]string, 0, len(a.Value))
	for _, raw := range a.Value {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			parts = append(parts, s)
			continue
		}
		var pn map[string]string
		if a.VR == "PN" && json.Unmarshal(raw, &pn) == nil {
			// The component groups present, even empty, are kept: "A=^="
			// has an ideographic and a phonetic group (PS3.18 F.2.2).
			v := pn["Alphabetic"]
			ideo, hasIdeo := pn["Ideographic"]
			phon, hasPhon := pn["Phonetic"]
			if hasIdeo || hasPhon {
				v += "=" + ideo
			}
			if hasPhon {
				v += "=" + phon
			}
			parts = append(parts, v)
			continue
		}
		parts = append(parts, strings.TrimSpace(string(raw))) // a number, or null
	}
	for i, p := range parts {
		if p == "null" {
			parts[i] = ""
		}
	}
	return strings.Join(parts, `\`)
}

// Encode writes the response identifier for one QIDO-RS result: the query's
// keys, in tag order, with the result's values (empty when it has none),
// the Query/Retrieve Level, and Specific Character Set ISO_IR 192 when a
// value is not ASCII.
func Encode(q *Query, obj map[string]attr, ts string) ([]byte, error) {
	explicit := ts == "1.2.840.10008.1.2.1"
	type el struct {
		tag uint32
		vr  string
		v   []byte
	}
	els := []el{{tagQueryRetrieveLevel, "CS", []byte(q.Level)}}
	utf8 := false
	for _, k := range q.Keys {
		a := obj[fmt.Sprintf("%08X", k.Tag)]
		vr := k.VR
		if vr == "UN" && a.VR != "" {
			vr = a.VR
		}
		v, err := value(vr, a)
		if err != nil {
			return nil, fmt.Errorf("%w: (%04X,%04X): %v", ErrEndpoint, k.Tag>>16, k.Tag&0xFFFF, err)
		}
		for _, c := range v {
			if c >= 0x80 {
				utf8 = true
			}
		}
		els = append(els, el{k.Tag, vr, v})
	}
	if utf8 {
		els = append(els, el{tagSpecificCharacterSet, "CS", []byte("ISO_IR 192")})
	}
	slices.SortFunc(els, func(a, b el) int { return int(int64(a.tag) - int64(b.tag)) })
	var b []byte
	for _, e := range els {
		v := e.v
		if len(v)%2 == 1 {
			pad := byte(' ')
			if e.vr == "UI" || e.vr == "OB" || e.vr == "UN" {
				pad = 0
			}
			v = append(v, pad)
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(e.tag>>16))
		b = binary.LittleEndian.AppendUint16(b, uint16(e.tag))
		switch {
		case !explicit:
			b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		case slices.Contains([]string{"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}, e.vr):
			b = append(b, e.vr[0], e.vr[1], 0, 0)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		default:
			if len(v) > 0xFFFF {
				return nil, fmt.Errorf("%w: (%04X,%04X): value of %d bytes", ErrEndpoint, e.tag>>16, e.tag&0xFFFF, len(v))
			}
			b = append(b, e.vr[0], e.vr[1])
			b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
		}
		b = append(b, v...)
	}
	return b, nil
}

// value encodes an attribute's JSON values in VR vr.
func value(vr string, a attr) ([]byte, error) {
	if len(a.Value) == 0 {
		return nil, nil
	}
	num := func(bits int, float bool, signed bool) ([]byte, error) {
		var out []byte
		for _, raw := range a.Value {
			var f float64
			if err := json.Unmarshal(raw, &f); err != nil {
				return nil, fmt.Errorf("%s value %s is not a number", vr, raw)
			}
			switch {
			case float && bits == 32:
				out = binary.LittleEndian.AppendUint32(out, math.Float32bits(float32(f)))
			case float:
				out = binary.LittleEndian.AppendUint64(out, math.Float64bits(f))
			case bits == 16 && signed:
				out = binary.LittleEndian.AppendUint16(out, uint16(int16(f)))
			case bits == 16:
				out = binary.LittleEndian.AppendUint16(out, uint16(f))
			case bits == 32 && signed:
				out = binary.LittleEndian.AppendUint32(out, uint32(int32(f)))
			default:
				out = binary.LittleEndian.AppendUint32(out, uint32(f))
			}
		}
		return out, nil
	}
	switch vr {
	case "US":
		return num(16, false, false)
	case "SS":
		return num(16, false, true)
	case "UL":
		return num(32, false, false)
	case "SL":
		return num(32, false, true)
	case "FL":
		return num(32, true, true)
	case "FD":
		return num(64, true, true)
	case "SQ", "OB", "OW", "OD", "OF", "OL", "OV", "UN", "AT":
		return nil, nil // not returned: sequence and binary keys are not supported
	}
	return []byte(a.text()), nil
}

// Instance is one instance a retrieval selects.
type Instance struct {
	Study, Series, SOPInstance, SOPClass string
}

// Instances lists the instances q selects (its matching keys, whatever
// its level), from QIDO-RS.
func (c *Client) Instances(ctx context.Context, q *Query) ([]Instance, error) {
	params := url.Values{}
	for _, k := range q.Keys {
		if k.Value == "" {
			continue
		}
		v := k.Value
		if k.VR == "UI" {
			v = strings.ReplaceAll(v, `\`, ",")
		}
		params.Add(fmt.Sprintf("%08X", k.Tag), v)
	}
	if len(params) == 0 {
		return nil, mismatch("a retrieval without a unique key would take everything")
	}
	for _, t := range []uint32{tagStudyInstanceUID, tagSeriesInstanceUID, tagSOPInstanceUID, 0x00080016} {
		params.Add("includefield", fmt.Sprintf("%08X", t))
	}
	var out []Instance
	err := c.pages(ctx, "instances", params, func(o map[string]attr) error {
		in := Instance{
			Study: o[fmt.Sprintf("%08X", tagStudyInstanceUID)].text(), Series: o[fmt.Sprintf("%08X", tagSeriesInstanceUID)].text(),
			SOPInstance: o[fmt.Sprintf("%08X", tagSOPInstanceUID)].text(), SOPClass: o["00080016"].text(),
		}
		if in.Study == "" || in.Series == "" || in.SOPInstance == "" {
			return fmt.Errorf("%w: an instance without its study, series or SOP instance UID", ErrEndpoint)
		}
		out = append(out, in)
		return nil
	})
	return out, err
}

// Retrieve writes the Part 10 file of one instance, from WADO-RS, in the
// transfer syntax it is stored in (transfer-syntax=*), to w as it arrives.
func (c *Client) Retrieve(ctx context.Context, in Instance, w io.Writer) (int64, error) {
	for _, s := range []string{in.Study, in.Series, in.SOPInstance} {
		if strings.ContainsAny(s, "/?#%") || s == "." || s == ".." {
			return 0, fmt.Errorf("%w: a UID that cannot go in a URL path", ErrEndpoint)
		}
	}
	u := *c.Base
	u.Path = strings.TrimRight(u.Path, "/") + "/studies/" + in.Study + "/series/" + in.Series + "/instances/" + in.SOPInstance
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", `multipart/related; type="application/dicom"; transfer-syntax=*`)
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	if c.Auth != nil {
		if err := c.Auth.Authorize(ctx, req); err != nil {
			return 0, fmt.Errorf("%w: credentials: %v", ErrEndpoint, err)
		}
	}
	rsp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrEndpoint, redact(err))
	}
	defer rsp.Body.Close()
	if rsp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(rsp.Body, 64<<10))
		return 0, fmt.Errorf("%w: WADO-RS answered HTTP %d", ErrEndpoint, rsp.StatusCode)
	}
	mt, params, err := mime.ParseMediaType(rsp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" || params["boundary"] == "" {
		return 0, fmt.Errorf("%w: WADO-RS answered %q, not multipart/related", ErrEndpoint, rsp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(rsp.Body, params["boundary"])
	part, err := mr.NextRawPart()
	if err != nil {
		return 0, fmt.Errorf("%w: WADO-RS answer: %v", ErrEndpoint, err)
	}
	n, err := io.Copy(w, part)
	if err != nil {
		return n, fmt.Errorf("%w: WADO-RS answer: %v", ErrEndpoint, err)
	}
	return n, nil
}
