package forward

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"
)

// reply is what the fake STOW-RS endpoint does with one request.
type reply struct {
	status     int               // 0: 200
	retryAfter string            // Retry-After header
	fail       map[string]uint16 // SOP instance -> FailureReason; the others are referenced
	failAll    uint16            // every instance failed with this FailureReason
	warn       uint16            // WarningReason on the referenced instances
	body       *string           // the raw answer body, instead of DICOM JSON
	reset      bool              // read part of the body, then reset the connection
	hang       bool              // read the body, then answer nothing until the test ends
}

// stowRequest is what the endpoint saw of one request.
type stowRequest struct {
	At       time.Time
	Path     string
	Query    string
	SOPs     []string // SOP instances of the parts, in order
	Complete bool     // the body was read to its end and checked
}

// endpoint is a fake STOW-RS service for fault injection. It checks every
// request the way a strict server would (PS3.18 10.5, RFC 2387) and reports
// what is wrong with t.Errorf; it answers from respond(n), n counting
// requests from 0.
type endpoint struct {
	t       testing.TB
	srv     *httptest.Server
	release chan struct{}

	mu      sync.Mutex
	handler http.Handler // instead of the STOW-RS service, when set
	respond func(n int) reply
	// respondReq, when set, answers instead of respond, seeing the request
	// (its Authorization header).
	respondReq func(n int, r *http.Request) reply
	reqs       []stowRequest
	want       map[string][]byte // SOP instance -> the data set it must carry
	stored     map[string]bool
}

func newEndpoint(t testing.TB, objs ...*Object) *endpoint {
	e := &endpoint{t: t, release: make(chan struct{}), want: map[string][]byte{}, stored: map[string]bool{},
		respond: func(int) reply { return reply{} }}
	for _, o := range objs {
		e.want[o.SOPInstanceUID] = dataSetOf(t, o)
	}
	e.srv = httptest.NewServer(http.HandlerFunc(e.dispatch))
	t.Cleanup(e.srv.Close)
	t.Cleanup(func() { close(e.release) }) // runs first: hung handlers end before Close waits for them
	return e
}

// script answers request n with replies[n], and with the last one after.
func script(replies ...reply) func(int) reply {
	return func(n int) reply { return replies[min(n, len(replies)-1)] }
}

func (e *endpoint) setRespond(f func(int) reply) {
	e.mu.Lock()
	e.respond = f
	e.mu.Unlock()
}

func (e *endpoint) setRespondReq(f func(int, *http.Request) reply) {
	e.mu.Lock()
	e.respondReq = f
	e.mu.Unlock()
}

// setHandler replaces the STOW-RS service with h (which may call serve).
func (e *endpoint) setHandler(h http.Handler) {
	e.mu.Lock()
	e.handler = h
	e.mu.Unlock()
}

func (e *endpoint) dispatch(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	h := e.handler
	e.mu.Unlock()
	if h != nil {
		h.ServeHTTP(w, r)
		return
	}
	e.serve(w, r)
}

func (e *endpoint) requests() []stowRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]stowRequest(nil), e.reqs...)
}

func (e *endpoint) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.reqs)
}

func (e *endpoint) serve(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	n := len(e.reqs)
	e.reqs = append(e.reqs, stowRequest{At: time.Now(), Path: r.URL.Path, Query: r.URL.RawQuery})
	var rep reply
	if e.respondReq != nil {
		rep = e.respondReq(n, r)
	} else {
		rep = e.respond(n)
	}
	e.mu.Unlock()

	if r.Method != http.MethodPost {
		e.t.Errorf("request %d: method %s, want POST", n, r.Method)
	}
	if rep.reset {
		// Take part of the body, then drop the connection with an RST.
		io.CopyN(io.Discard, r.Body, 64<<10)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			e.t.Errorf("hijack: %v", err)
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		conn.Close()
		return
	}

	sops, err := e.check(r)
	if err != nil {
		e.t.Errorf("request %d (%s): %v", n, r.URL.Path, err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	e.mu.Lock()
	e.reqs[n].SOPs, e.reqs[n].Complete = sops, true
	for _, s := range sops {
		if rep.fail[s] == 0 && rep.failAll == 0 {
			e.stored[s] = true
		}
	}
	e.mu.Unlock()

	if rep.hang {
		select {
		case <-e.release:
		case <-r.Context().Done():
		}
		return
	}
	if rep.retryAfter != "" {
		w.Header().Set("Retry-After", rep.retryAfter)
	}
	status := rep.status
	if status == 0 {
		status = http.StatusOK
	}
	body := answerJSON(sops, rep)
	if rep.body != nil {
		body = *rep.body
	}
	ctype := "application/dicom+json"
	if status >= 400 && status != http.StatusConflict && rep.body == nil && rep.fail == nil && rep.failAll == 0 {
		// What an endpoint says when it did not understand the request at
		// all (wrong path, bad media type): no per-instance answer.
		body, ctype = http.StatusText(status)+"\n", "text/plain"
	}
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// check validates a STOW-RS request and returns the SOP instances of its
// parts.
func (e *endpoint) check(r *http.Request) ([]string, error) {
	if a := r.Header.Get("Accept"); a != "application/dicom+json" {
		return nil, fmt.Errorf("Accept %q, want application/dicom+json", a)
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" || params["type"] != "application/dicom" || params["boundary"] == "" {
		return nil, fmt.Errorf("Content-Type %q, want multipart/related; type=\"application/dicom\"; boundary=...", r.Header.Get("Content-Type"))
	}
	if len(r.TransferEncoding) > 0 || r.ContentLength <= 0 || r.Header.Get("Content-Length") == "" {
		return nil, fmt.Errorf("no Content-Length (transfer encoding %v)", r.TransferEncoding)
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the body: %v", err)
	}
	if int64(len(body)) != r.ContentLength {
		return nil, fmt.Errorf("Content-Length %d, body %d bytes", r.ContentLength, len(body))
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var sops []string
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("part %d: %v", len(sops), err)
		}
		if ct := p.Header.Get("Content-Type"); ct != "application/dicom" {
			return nil, fmt.Errorf("part %d: Content-Type %q", len(sops), ct)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, fmt.Errorf("part %d: %v", len(sops), err)
		}
		sop, err := e.checkPart(b)
		if err != nil {
			return nil, fmt.Errorf("part %d: %v", len(sops), err)
		}
		sops = append(sops, sop)
	}
	if len(sops) == 0 {
		return nil, errors.New("no parts")
	}
	return sops, nil
}

// checkPart checks that b is a Part 10 file (PS3.10 7.1) whose meta group
// has no private record of the gateway, and whose data set is the spool
// file's, byte for byte.
func (e *endpoint) checkPart(b []byte) (string, error) {
	if len(b) < 132+12 || !bytes.Equal(b[:128], make([]byte, 128)) || string(b[128:132]) != "DICM" {
		return "", errors.New("no preamble and DICM prefix")
	}
	meta, err := parseMeta(b[132:])
	if err != nil {
		return "", err
	}
	for _, el := range []uint16{0x0100, 0x0102} {
		if _, ok := meta.elems[el]; ok {
			return "", fmt.Errorf("meta group carries (0002,%04X): the gateway's private record leaked", el)
		}
	}
	if v := meta.elems[0x0001]; !bytes.Equal(v, []byte{0, 1}) {
		return "", fmt.Errorf("file meta information version % x", v)
	}
	sop := meta.str(0x0003)
	if meta.str(0x0002) != ctClass || meta.str(0x0010) != explicitLE || meta.str(0x0012) == "" {
		return "", fmt.Errorf("meta group: class %q, transfer syntax %q, implementation %q",
			meta.str(0x0002), meta.str(0x0010), meta.str(0x0012))
	}
	ds := b[132+meta.n:]
	e.mu.Lock()
	want, ok := e.want[sop]
	e.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("unexpected SOP instance %q", sop)
	}
	if !bytes.Equal(ds, want) {
		return "", fmt.Errorf("SOP instance %s: data set of %d bytes differs from the spool file's %d", sop, len(ds), len(want))
	}
	return sop, nil
}

type metaGroup struct {
	elems map[uint16][]byte
	n     int // bytes of the group, from (0002,0000) to its end
}

func (m metaGroup) str(el uint16) string { return string(bytes.TrimRight(m.elems[el], "\x00 ")) }

// parseMeta reads group 0002 (Explicit VR LE) as its group length bounds it.
func parseMeta(b []byte) (metaGroup, error) {
	if binary.LittleEndian.Uint16(b) != 2 || binary.LittleEndian.Uint16(b[2:]) != 0 || string(b[4:6]) != "UL" || binary.LittleEndian.Uint16(b[6:]) != 4 {
		return metaGroup{}, errors.New("meta group does not start with (0002,0000) UL")
	}
	glen := int(binary.LittleEndian.Uint32(b[8:]))
	if 12+glen > len(b) {
		return metaGroup{}, fmt.Errorf("group length %d beyond the part", glen)
	}
	m := metaGroup{elems: map[uint16][]byte{}, n: 12 + glen}
	g := b[12 : 12+glen]
	for off := 0; off < len(g); {
		if off+8 > len(g) {
			return metaGroup{}, errors.New("truncated element in the meta group")
		}
		if grp := binary.LittleEndian.Uint16(g[off:]); grp != 2 {
			return metaGroup{}, fmt.Errorf("group %04X inside the meta group", grp)
		}
		el := binary.LittleEndian.Uint16(g[off+2:])
		vr := string(g[off+4 : off+6])
		var vl, hdr int
		switch vr {
		case "OB", "OW", "UN", "SQ", "UT":
			if off+12 > len(g) {
				return metaGroup{}, errors.New("truncated element in the meta group")
			}
			vl, hdr = int(binary.LittleEndian.Uint32(g[off+8:])), 12
		default:
			vl, hdr = int(binary.LittleEndian.Uint16(g[off+6:])), 8
		}
		if off+hdr+vl > len(g) {
			return metaGroup{}, fmt.Errorf("(0002,%04X) overruns the group length", el)
		}
		m.elems[el] = g[off+hdr : off+hdr+vl]
		off += hdr + vl
	}
	return m, nil
}

// answerJSON is the STOW-RS answer (PS3.18 10.5.3, DICOM JSON F.2).
func answerJSON(sops []string, rep reply) string {
	type attr struct {
		VR    string `json:"vr"`
		Value []any  `json:"Value,omitempty"`
	}
	var refs, fails []any
	for _, s := range sops {
		code := rep.fail[s]
		if rep.failAll != 0 {
			code = rep.failAll
		}
		if code != 0 {
			fails = append(fails, map[string]attr{
				"00081150": {VR: "UI", Value: []any{ctClass}},
				"00081155": {VR: "UI", Value: []any{s}},
				"00081197": {VR: "US", Value: []any{code}},
			})
			continue
		}
		ref := map[string]attr{
			"00081150": {VR: "UI", Value: []any{ctClass}},
			"00081155": {VR: "UI", Value: []any{s}},
			"00081190": {VR: "UR", Value: []any{"http://example/studies/x/series/y/instances/" + s}},
		}
		if rep.warn != 0 {
			ref["00081196"] = attr{VR: "US", Value: []any{rep.warn}}
		}
		refs = append(refs, ref)
	}
	top := map[string]attr{}
	if refs != nil {
		top["00081199"] = attr{VR: "SQ", Value: refs}
	}
	if fails != nil {
		top["00081198"] = attr{VR: "SQ", Value: fails}
	}
	b, err := json.Marshal(top)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// statusReply is a reply with an HTTP status and nothing else of note.
func statusReply(code int, retryAfter ...int) reply {
	r := reply{status: code}
	if len(retryAfter) > 0 {
		r.retryAfter = strconv.Itoa(retryAfter[0])
	}
	return r
}
