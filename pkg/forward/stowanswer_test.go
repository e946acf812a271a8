package forward

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func response(code int, header map[string]string, body string) *http.Response {
	h := http.Header{}
	for k, v := range header {
		h.Set(k, v)
	}
	return &http.Response{
		StatusCode: code, Status: fmt.Sprintf("%d %s", code, http.StatusText(code)),
		Header: h, Body: io.NopCloser(strings.NewReader(body)),
	}
}

func sopObjs(sops ...string) []*Object {
	var out []*Object
	for _, s := range sops {
		out = append(out, &Object{ID: "id-" + s, SOPInstanceUID: s})
	}
	return out
}

func TestSTOWAnswerResults(t *testing.T) {
	json := "application/dicom+json"
	three := []string{"1.1", "1.2", "1.3"}
	tests := []struct {
		name       string
		code       int
		ctype      string
		retryAfter string
		body       string
		sops       []string
		want       []Outcome
		alone      bool
		after      time.Duration
		reason     string // in the first result's reason
		cause      Cause  // of the first result
		// unconfirmed: the results that are Retry say the answer left them out
		unconfirmed bool
		length      int64 // Content-Length announced; 0: the body's
	}{
		{name: "200 all referenced", code: 200, ctype: json, body: answerJSON(three, reply{}), sops: three,
			want: []Outcome{Delivered, Delivered, Delivered}},
		{name: "200 application/json DICOM", code: 200, ctype: "application/json; charset=utf-8", body: answerJSON(three, reply{}), sops: three,
			want: []Outcome{Delivered, Delivered, Delivered}},
		{name: "200 no body", code: 200, sops: three, want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM, reason: "an empty body"},
		{name: "204", code: 204, sops: three, want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM},
		{name: "200 with warning", code: 200, ctype: json, body: answerJSON(three, reply{warn: 0xB000}), sops: three,
			want: []Outcome{Delivered, Delivered, Delivered}, reason: "warning 0xB000"},
		{name: "200 garbage JSON", code: 200, ctype: json, body: "{not json", sops: three,
			want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM, reason: "not a DICOM response"},
		{name: "200 HTML login page", code: 200, ctype: "text/html; charset=utf-8", body: "<html><form action=/login>", sops: three,
			want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM, reason: `"text/html"`},
		{name: "200 JSON error page", code: 200, ctype: "application/json", body: `{"error":"session expired"}`, sops: three,
			want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM, reason: `key "error" is not a DICOM tag`},
		{name: "200 JSON without VRs", code: 200, ctype: json, body: `{"00081199":{"Value":[]}}`, sops: three,
			want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM, reason: "no VR"},
		{name: "200 HTML without Content-Type", code: 200, body: "<html>ok</html>", sops: three,
			want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM, reason: "without a Content-Type"},
		{name: "200 text without Content-Type", code: 200, body: "OK", sops: three,
			want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM, reason: "without a Content-Type"},
		{name: "200 JSON error without Content-Type", code: 200, body: ` {"ok":true}`, sops: three,
			want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM, reason: "without a Content-Type"},
		// Orthanc 1.10's partial refusal: 400, DICOM JSON, no Content-Type.
		{name: "400 DICOM JSON without Content-Type", code: 400, body: answerJSON(three, reply{fail: map[string]uint16{"1.2": 0xC000}}), sops: three,
			want: []Outcome{Delivered, Dead, Delivered}},
		{name: "200 XML (Orthanc)", code: 200, ctype: "application/dicom+xml", body: orthancXML, sops: []string{orthancSOP},
			want: []Outcome{Delivered}},
		{name: "200 XML not DICOM", code: 200, ctype: "application/xml", body: "<html><body>login</body></html>", sops: three,
			want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM, reason: "NativeDicomModel"},
		{name: "200 DICOM listing none of them", code: 200, ctype: json, body: answerJSON([]string{"9.9"}, reply{}), sops: three,
			want: []Outcome{Retry, Retry, Retry}, unconfirmed: true, reason: "without listing"},
		{name: "200 DICOM listing one of three", code: 200, ctype: json, body: answerJSON([]string{"1.2"}, reply{}), sops: three,
			want: []Outcome{Retry, Delivered, Retry}, unconfirmed: true},
		{name: "202 mixed", code: 202, ctype: json, sops: []string{"1.1", "1.2", "1.3", "1.4", "1.5", "1.6"},
			body: answerJSON([]string{"1.1", "1.2", "1.3", "1.4", "1.5", "1.6"}, reply{fail: map[string]uint16{
				"1.1": 0xA700, "1.2": 0xC122, "1.3": 0xA900, "1.4": 0x0111, "1.5": 0x0124}}),
			want: []Outcome{Retry, Dead, Dead, Delivered, Pause, Delivered}, reason: "0xA700"},
		{name: "202 without a word on one", code: 202, ctype: json, body: answerJSON([]string{"1.1"}, reply{}), sops: []string{"1.2", "1.1"},
			want: []Outcome{Retry, Delivered}, unconfirmed: true},
		{name: "202 garbage JSON", code: 202, ctype: json, body: "[1,2", sops: three,
			want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM},
		{name: "202 wrong JSON types", code: 202, ctype: json, sops: []string{"1.1"},
			body: `{"00081199":{"vr":"SQ","Value":"x"},"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":[7]},"00081197":{"vr":"US","Value":["A700"]}}]}}`,
			want: []Outcome{Pause}, cause: CauseNotDICOM},
		{name: "202 failure without a reason", code: 202, ctype: json, sops: []string{"1.1"},
			body: `{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.1"]}}]}}`, want: []Outcome{Retry}},
		{name: "202 padded UID", code: 202, ctype: json, sops: []string{"1.1"},
			body: `{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.1\u0000"]}}]}}`, want: []Outcome{Delivered}},
		{name: "200 announcing 10 GB", code: 200, ctype: json, length: 10 << 30, body: answerJSON(three, reply{}), sops: three,
			want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM, reason: "10737418240 bytes"},
		{name: "200 longer than it may be, no length", code: 200, ctype: json, body: answerJSON(three, reply{}) + strings.Repeat(" ", int(answerLimit(3))), sops: three,
			want: []Outcome{Pause, Pause, Pause}, cause: CauseNotDICOM, reason: "more than"},
		{name: "409 processing failure", code: 409, ctype: json, body: answerJSON(three, reply{failAll: 0x0110}), sops: three,
			want: []Outcome{Retry, Retry, Retry}, reason: "0x0110"},
		{name: "409 duplicate", code: 409, ctype: json, body: answerJSON(three, reply{failAll: 0x0111}), sops: three,
			want: []Outcome{Delivered, Delivered, Delivered}},
		{name: "409 no body", code: 409, sops: three, want: []Outcome{Retry, Retry, Retry}, reason: "says nothing"},
		{name: "409 HTML", code: 409, ctype: "text/html", body: "<p>conflict</p>", sops: three, want: []Outcome{Retry, Retry, Retry}},
		{name: "408", code: 408, sops: three, want: []Outcome{Retry, Retry, Retry}, reason: "408"},
		{name: "429 Retry-After", code: 429, retryAfter: "120", sops: three, want: []Outcome{Retry, Retry, Retry}, after: 120 * time.Second},
		{name: "500", code: 500, sops: three, want: []Outcome{Retry, Retry, Retry}, reason: "500"},
		{name: "501", code: 501, sops: three, want: []Outcome{Retry, Retry, Retry}},
		// An HTTP date has whole seconds and the table is built before the
		// subtest reads it: 91 s ahead reads as anything from just under 90 s
		// to 91 s, so the lower bound is 89 s (the check allows up to +2 s).
		{name: "503 Retry-After date", code: 503, retryAfter: time.Now().Add(91 * time.Second).UTC().Format(http.TimeFormat), sops: three,
			want: []Outcome{Retry, Retry, Retry}, after: 89 * time.Second},
		{name: "503 Retry-After past date", code: 503, retryAfter: "Wed, 21 Oct 2015 07:28:00 GMT", sops: three, want: []Outcome{Retry, Retry, Retry}},
		{name: "503 Retry-After garbage", code: 503, retryAfter: "soon", sops: three, want: []Outcome{Retry, Retry, Retry}},
		{name: "503 Retry-After negative", code: 503, retryAfter: "-5", sops: three, want: []Outcome{Retry, Retry, Retry}},
		{name: "413 batch", code: 413, sops: three, want: []Outcome{Retry, Retry, Retry}, alone: true},
		{name: "413 single", code: 413, sops: []string{"1.1"}, want: []Outcome{Dead}, reason: "too large"},
		{name: "400", code: 400, sops: three, want: []Outcome{Pause, Pause, Pause}, reason: "400", cause: CauseClientError},
		{name: "403", code: 403, sops: three, want: []Outcome{Pause, Pause, Pause}, reason: "403", cause: CauseCredentials},
		{name: "404", code: 404, sops: three, want: []Outcome{Pause, Pause, Pause}, reason: "404", cause: CauseClientError},
		{name: "415", code: 415, sops: three, want: []Outcome{Pause, Pause, Pause}, reason: "415", cause: CauseClientError},
		{name: "302", code: 302, sops: three, want: []Outcome{Pause, Pause, Pause}, reason: "redirect", cause: CauseRedirect},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.ctype != "" {
				h["Content-Type"] = tc.ctype
			}
			if tc.retryAfter != "" {
				h["Retry-After"] = tc.retryAfter
			}
			resp := response(tc.code, h, tc.body)
			if tc.length != 0 {
				resp.ContentLength = tc.length
			}
			a, err := readAnswer(resp, answerLimit(len(tc.sops)))
			if err != nil {
				t.Fatal(err)
			}
			res := a.results(sopObjs(tc.sops...))
			if len(res) != len(tc.sops) {
				t.Fatalf("%d results for %d objects", len(res), len(tc.sops))
			}
			for i, r := range res {
				if r.Outcome != tc.want[i] {
					t.Errorf("instance %s: %v (%s), want %v", tc.sops[i], r.Outcome, r.Reason, tc.want[i])
				}
				if r.Alone != tc.alone {
					t.Errorf("instance %s: Alone %v", tc.sops[i], r.Alone)
				}
				if r.Outcome == Retry && r.Unconfirmed != tc.unconfirmed {
					t.Errorf("instance %s: Unconfirmed %v", tc.sops[i], r.Unconfirmed)
				}
				if r.Outcome != Delivered && r.Reason == "" {
					t.Errorf("instance %s: %v without a reason", tc.sops[i], r.Outcome)
				}
			}
			if res[0].Cause != tc.cause {
				t.Errorf("cause %v, want %v", res[0].Cause, tc.cause)
			}
			if tc.reason != "" && !strings.Contains(res[0].Reason, tc.reason) {
				t.Errorf("reason %q, want it to mention %q", res[0].Reason, tc.reason)
			}
			if got := res[0].RetryAfter; got < tc.after || got > tc.after+2*time.Second {
				t.Errorf("RetryAfter %v, want %v", got, tc.after)
			}
		})
	}
}

// TestSTOWAnswerUnauthorized: by the time an answer is read, Deliver has
// already retried once with refreshed credentials: a 401 pauses.
func TestSTOWAnswerUnauthorized(t *testing.T) {
	a, err := readAnswer(response(401, nil, ""), answerLimit(1))
	if err != nil {
		t.Fatal(err)
	}
	if r := a.results(sopObjs("1.1"))[0]; r.Outcome != Pause {
		t.Errorf("401: %v (%s), want pause", r.Outcome, r.Reason)
	}
}

func TestFailureReasonClasses(t *testing.T) {
	for code, want := range map[uint16]Outcome{
		0xA700: Retry, 0xA7FF: Retry, 0x0110: Retry, 0x0212: Retry,
		0x0111: Delivered,
		0x0124: Pause,
		0xC122: Dead, 0x0122: Dead, 0xA900: Dead, 0xA9FF: Dead, 0xC000: Dead, 0xCFFF: Dead,
		0xB000: Retry, 0xFFFF: Retry, // unknown: not a reason to throw the object away
	} {
		r := failureResult(code)
		if r.Outcome != want {
			t.Errorf("FailureReason 0x%04X: %v, want %v", code, r.Outcome, want)
		}
		if !strings.Contains(r.Reason, fmt.Sprintf("0x%04X", code)) {
			t.Errorf("FailureReason 0x%04X: reason %q does not name it", code, r.Reason)
		}
	}
}

func TestRetryAfterHeader(t *testing.T) {
	for _, tc := range []struct {
		h    string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"7", 7 * time.Second, true},
		{"3600", time.Hour, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"tomorrow", 0, false},
		{"Wed, 21 Oct 2015 07:28:00 GMT", 0, true},
	} {
		resp := response(503, map[string]string{"Retry-After": tc.h}, "")
		got, ok := retryAfter(resp)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Retry-After %q: %v, %v; want %v, %v", tc.h, got, ok, tc.want, tc.ok)
		}
	}
	future := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	if got, ok := retryAfter(response(503, map[string]string{"Retry-After": future}, "")); !ok || got < 59*time.Minute || got > time.Hour {
		t.Errorf("Retry-After %q: %v", future, got)
	}
	if _, ok := retryAfter(nil); ok {
		t.Error("Retry-After of no response")
	}
}

func TestNewSTOWRefusesBadBaseURLs(t *testing.T) {
	for _, u := range []string{"", "ftp://host/dicom-web", "http://", "http://user:secret@host/dicom-web", "::"} {
		if _, err := NewSTOW(STOWConfig{BaseURL: u}, nil); err == nil {
			t.Errorf("NewSTOW(%q) accepted", u)
		}
	}
	s, err := NewSTOW(STOWConfig{BaseURL: "https://kheops.example/api/?album=secret"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.url("1.2.3"); got != "https://kheops.example/api/studies/1.2.3?album=secret" {
		t.Errorf("url = %q", got)
	}
	if got := s.url(""); got != "https://kheops.example/api/studies?album=secret" {
		t.Errorf("url = %q", got)
	}
	if strings.Contains(s.String(), "secret") {
		t.Errorf("String() = %q shows the query string", s.String())
	}
}

// TestBadRequestWithPerInstanceAnswer: Orthanc answers 400 when one
// instance of a request is refused, with a DICOM JSON body saying which was
// stored and which refused and why: read per instance, not as a
// configuration error that pauses the destination.
func TestBadRequestWithPerInstanceAnswer(t *testing.T) {
	body := `{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.1"]}}]},` +
		`"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.2"]},"00081197":{"vr":"US","Value":[49152]}}]}}`
	a, err := readAnswer(response(400, map[string]string{"Content-Type": "application/dicom+json"}, body), answerLimit(3))
	if err != nil {
		t.Fatal(err)
	}
	objs := []*Object{{SOPInstanceUID: "1.2.1"}, {SOPInstanceUID: "1.2.2"}, {SOPInstanceUID: "1.2.3"}}
	got := a.results(objs)
	if got[0].Outcome != Delivered || got[1].Outcome != Dead || got[2].Outcome != Retry {
		t.Fatalf("%+v", got)
	}
	if !strings.Contains(got[1].Reason, "0xC000") {
		t.Errorf("reason %q", got[1].Reason)
	}
	bare := &stowAnswer{status: 400, statusText: "400 Bad Request", stored: map[string]uint16{}, failed: map[string]uint16{}}
	if r := bare.results(objs[:1]); r[0].Outcome != Pause {
		t.Fatalf("bare 400: %+v", r)
	}
}

// FuzzSTOWAnswer: whatever an endpoint answers (status, headers, body),
// reading it never panics, gives one result per object, and never calls an
// object delivered on an answer that is not 2xx, 409 or a per-instance 400
// naming it as stored, nor on any answer that is not a DICOM response.
func FuzzSTOWAnswer(f *testing.F) {
	f.Add(200, "application/dicom+json", "", `{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.1"]}}]}}`)
	f.Add(400, "application/dicom+json", "", `{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.2"]},"00081197":{"vr":"US","Value":[49152]}}]}}`)
	f.Add(503, "text/plain", "120", "busy")
	f.Add(409, "application/json", "Fri, 31 Dec 1999 23:59:59 GMT", `{"00081198":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":[7]}}]}}`)
	f.Add(200, "text/html", "", "<html>login</html>")
	f.Add(200, "application/dicom+xml", "", orthancXML)
	f.Fuzz(func(t *testing.T, status int, ctype, retryAfter, body string) {
		if status < 100 || status > 999 {
			return
		}
		resp := &http.Response{StatusCode: status, Status: fmt.Sprint(status), Header: http.Header{}, Body: io.NopCloser(strings.NewReader(body))}
		resp.Header.Set("Content-Type", ctype)
		resp.Header.Set("Retry-After", retryAfter)
		a, err := readAnswer(resp, answerLimit(2))
		if err != nil {
			return
		}
		objs := []*Object{{SOPInstanceUID: "1.2.1"}, {SOPInstanceUID: "1.2.2"}}
		res := a.results(objs)
		if len(res) != len(objs) {
			t.Fatalf("%d results for %d objects", len(res), len(objs))
		}
		for i, r := range res {
			if r.Outcome == Delivered {
				_, named := a.stored[objs[i].SOPInstanceUID]
				dup := a.failed[objs[i].SOPInstanceUID] == 0x0111
				ok := a.dicom && (status >= 200 && status < 300 || status == 409 || status == 400) && (named || dup)
				if !ok {
					t.Fatalf("status %d: %s called delivered (%+v)", status, objs[i].SOPInstanceUID, r)
				}
			}
			if r.Outcome == 0 {
				t.Fatalf("no outcome for %s", objs[i].SOPInstanceUID)
			}
		}
	})
}

// orthancXML is what Orthanc 1.10 with DICOMweb 1.7 answered to a STOW-RS
// of one corpus file with Accept: application/dicom+xml (its odd empty
// <Value number="1" /> in the sequence included).
const orthancXML = `<?xml version="1.0" encoding="utf-8"?>
<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM" xsi:schemaLocation="http://dicom.nema.org/PS3.19/models/NativeDICOM" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <DicomAttribute tag="00080005" vr="CS" keyword="SpecificCharacterSet">
    <Value number="1">ISO_IR 100</Value>
  </DicomAttribute>
  <DicomAttribute tag="00081190" vr="UR" keyword="RetrieveURL">
    <Value number="1">http://127.0.0.1:18042/dicom-web/studies/1.3.6.1.4.1.5962.1.2.1.20040119072730.12322</Value>
  </DicomAttribute>
  <DicomAttribute tag="00081198" vr="SQ" keyword="FailedSOPSequence" />
  <DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence">
    <Item number="1">
      <DicomAttribute tag="00081150" vr="UI" keyword="ReferencedSOPClassUID">
        <Value number="1">1.2.840.10008.5.1.4.1.1.2</Value>
      </DicomAttribute>
      <DicomAttribute tag="00081155" vr="UI" keyword="ReferencedSOPInstanceUID">
        <Value number="1">1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322</Value>
      </DicomAttribute>
      <DicomAttribute tag="00081190" vr="UR" keyword="RetrieveURL">
        <Value number="1">http://127.0.0.1:18042/dicom-web/studies/1.3.6.1.4.1.5962.1.2.1.20040119072730.12322/series/1.3.6.1.4.1.5962.1.3.1.1.20040119072730.12322/instances/1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322</Value>
      </DicomAttribute>
    </Item>
    <Value number="1" />
  </DicomAttribute>
</NativeDicomModel>`

const orthancSOP = "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322"
