package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"sync"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// stowSink is a minimal STOW-RS endpoint for the memory check and the
// fan-out case: it reads each part's file meta information for the SOP
// Class and Instance UIDs, discards the rest of the part as it arrives, and
// answers 200 with a DICOM JSON ReferencedSOPSequence naming every
// instance (what dicomgw requires before it counts one delivered). A real
// endpoint would hold the gigabyte itself, and would cost the machine's
// processors more than the gateway; here only dicomgw is measured.
type stowSink struct {
	srv *http.Server
	url string

	mu    sync.Mutex
	parts []sinkPart
	errs  []error
}

type sinkPart struct {
	SOPClassUID, SOPInstanceUID string
	Bytes                       int64 // the whole part: file meta and data set
}

func startSTOWSink() (*stowSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &stowSink{url: "http://" + ln.Addr().String() + "/dicom-web"}
	s.srv = &http.Server{Handler: s}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *stowSink) close() { s.srv.Close() }

func (s *stowSink) received() ([]sinkPart, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sinkPart(nil), s.parts...), append([]error(nil), s.errs...)
}

func (s *stowSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(err error) {
		s.mu.Lock()
		s.errs = append(s.errs, err)
		s.mu.Unlock()
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" || params["boundary"] == "" {
		fail(fmt.Errorf("Content-Type %q", r.Header.Get("Content-Type")))
		return
	}
	var refs []any
	mr := multipart.NewReader(r.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(fmt.Errorf("multipart: %w", err))
			return
		}
		// The file meta group is a few hundred bytes: parse it from the
		// head of the part, then stream the rest away.
		br := bufio.NewReaderSize(p, 64<<10)
		head, _ := br.Peek(64 << 10)
		fm, _, err := harness.ParsePart10(head)
		if err != nil || fm.MediaStorageSOPInstanceUID == "" {
			fail(fmt.Errorf("part without a readable file meta group (%v)", err))
			return
		}
		n, err := io.Copy(io.Discard, br)
		if err != nil {
			fail(fmt.Errorf("reading a part: %w", err))
			return
		}
		s.mu.Lock()
		s.parts = append(s.parts, sinkPart{fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID, n})
		s.mu.Unlock()
		refs = append(refs, map[string]any{
			"00081150": map[string]any{"vr": "UI", "Value": []string{fm.MediaStorageSOPClassUID}},
			"00081155": map[string]any{"vr": "UI", "Value": []string{fm.MediaStorageSOPInstanceUID}},
		})
	}
	w.Header().Set("Content-Type", "application/dicom+json")
	json.NewEncoder(w).Encode(map[string]any{"00081199": map[string]any{"vr": "SQ", "Value": refs}})
}
