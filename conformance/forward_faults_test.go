package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// stowFake is a STOW-RS endpoint (PS3.18 10.5) for fault injection: it
// reads every part of a request as a Part 10 file, lets answer decide the
// HTTP status per request, and answers with a DICOM JSON response
// (application/dicom+json) that lists the stored instances in
// ReferencedSOPSequence (0008,1199) and the refused ones in
// FailedSOPSequence (0008,1198) with their FailureReason (0008,1197).
type stowFake struct {
	t *testing.T
	// answer is called for each well-formed request, in order (n counts
	// from 1): its HTTP status, Retry-After header ("" for none), and the
	// FailureReason of instances to refuse in a 200/202 answer.
	answer func(n int, sops []string) (status int, retryAfter string, failed map[string]uint16)
	// raw, when set, answers every well-formed request instead of answer
	// (a proxy's page, a lying endpoint); nothing is recorded as stored.
	raw func(n int, sops []string, w http.ResponseWriter)

	mu         sync.Mutex
	requests   []fakeRequest
	stored     map[string][]byte // SOP Instance UID -> data set, from 200/202 answers
	incomplete int               // requests whose body ended early (the client abandoned them)
}

type fakeRequest struct {
	at     time.Time
	sops   []string
	status int
}

func newSTOWFake(t *testing.T, answer func(n int, sops []string) (int, string, map[string]uint16)) (*stowFake, *httptest.Server) {
	f := &stowFake{t: t, answer: answer, stored: map[string][]byte{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *stowFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	fail := func(format string, args ...any) {
		f.t.Errorf("STOW-RS request: "+format, args...)
		http.Error(w, fmt.Sprintf(format, args...), http.StatusBadRequest)
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/dicom-web/studies") {
		fail("%s %s", r.Method, r.URL.Path)
		return
	}
	if a := r.Header.Get("Accept"); !strings.Contains(a, "application/dicom+json") {
		fail("Accept %q", a)
		return
	}
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/related" || params["type"] != "application/dicom" || params["boundary"] == "" {
		fail("Content-Type %q", r.Header.Get("Content-Type"))
		return
	}
	type inst struct {
		class, sop string
		ds         []byte
	}
	var insts []inst
	// The whole body first: a request the client abandons half-way (an
	// object found damaged while it streamed) is counted, not parsed.
	whole, err := io.ReadAll(r.Body)
	if err != nil {
		f.mu.Lock()
		f.incomplete++
		f.mu.Unlock()
		return
	}
	mr := multipart.NewReader(bytes.NewReader(whole), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail("multipart: %v", err)
			return
		}
		if ct := p.Header.Get("Content-Type"); ct != "application/dicom" {
			fail("part Content-Type %q", ct)
			return
		}
		b, err := io.ReadAll(p)
		if err != nil {
			fail("part: %v", err)
			return
		}
		fm, ds, err := harness.ParsePart10(b)
		if err != nil || fm.MediaStorageSOPInstanceUID == "" {
			fail("part is not a Part 10 file (%v)", err)
			return
		}
		insts = append(insts, inst{fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID, ds})
	}
	sops := make([]string, len(insts))
	for i, in := range insts {
		sops[i] = in.sop
	}

	if f.raw != nil {
		f.mu.Lock()
		n := len(f.requests) + 1
		f.requests = append(f.requests, fakeRequest{at: at, sops: sops})
		f.mu.Unlock()
		f.raw(n, sops, w)
		return
	}
	f.mu.Lock()
	n := len(f.requests) + 1
	status, retryAfter, failed := f.answer(n, sops)
	f.requests = append(f.requests, fakeRequest{at: at, sops: sops, status: status})
	if status == http.StatusOK || status == http.StatusAccepted {
		for _, in := range insts {
			if _, refused := failed[in.sop]; !refused {
				f.stored[in.sop] = in.ds
			}
		}
	}
	f.mu.Unlock()

	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	if status != http.StatusOK && status != http.StatusAccepted {
		w.WriteHeader(status)
		return
	}
	ref := func(in inst) map[string]any {
		return map[string]any{
			"00081150": map[string]any{"vr": "UI", "Value": []string{in.class}},
			"00081155": map[string]any{"vr": "UI", "Value": []string{in.sop}},
		}
	}
	var referenced, failedSeq []any
	for _, in := range insts {
		if code, refused := failed[in.sop]; refused {
			item := ref(in)
			item["00081197"] = map[string]any{"vr": "US", "Value": []uint16{code}}
			failedSeq = append(failedSeq, item)
		} else {
			referenced = append(referenced, ref(in))
		}
	}
	body := map[string]any{"00081190": map[string]any{"vr": "UR", "Value": []string{"http://" + r.Host + r.URL.Path}}}
	if len(referenced) > 0 {
		body["00081199"] = map[string]any{"vr": "SQ", "Value": referenced}
	}
	if len(failedSeq) > 0 {
		body["00081198"] = map[string]any{"vr": "SQ", "Value": failedSeq}
	}
	w.Header().Set("Content-Type", "application/dicom+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func (f *stowFake) snapshot() ([]fakeRequest, map[string][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	stored := make(map[string][]byte, len(f.stored))
	for k, v := range f.stored {
		stored[k] = v
	}
	return append([]fakeRequest(nil), f.requests...), stored
}

// TestForwardFaults drives the binary against a fault-injecting STOW-RS
// endpoint.
func TestForwardFaults(t *testing.T) {
	t.Parallel()

	// 503 with Retry-After: 1 for the first requests, then 200: every
	// object is delivered, and the requests prove there was no hot loop:
	// each object is sent again no sooner than the second the endpoint
	// asked for, so over the time it took it was sent at most once per
	// second, and once more when it succeeded.
	t.Run("503 Retry-After then 200", func(t *testing.T) {
		t.Parallel()
		const n, unavailable = 10, 6
		objs := studyObjects(t, t.TempDir(), n, 8<<10)
		fake, srv := newSTOWFake(t, func(k int, _ []string) (int, string, map[string]uint16) {
			if k <= unavailable {
				return http.StatusServiceUnavailable, "1", nil
			}
			return http.StatusOK, "", nil
		})
		g := startGateway(t, t.TempDir(), append([]string{"--stow-url", srv.URL + "/dicom-web"}, fastRetry...)...)
		start := time.Now()
		storeAll(t, g.Addr, "FAULTSCU", objs)
		c := waitDrained(t, g, 60*time.Second)
		elapsed := time.Since(start)
		if c.Dead != 0 {
			t.Errorf("dead letters: %v", c)
		}
		reqs, stored := fake.snapshot()
		for _, o := range objs {
			if !bytes.Equal(stored[o.SOPInstanceUID], o.DataSet) {
				t.Errorf("%s: not stored by the endpoint with its data set", o.SOPInstanceUID)
			}
			if r := deliveredRecords(g)[o.SOPInstanceUID]; len(r) != 1 {
				t.Errorf("%s: %d \"object delivered\" records", o.SOPInstanceUID, len(r))
			}
		}
		// Per object: its requests, their spacing, one success.
		perSOP := map[string][]fakeRequest{}
		for _, r := range reqs {
			for _, s := range r.sops {
				perSOP[s] = append(perSOP[s], r)
			}
		}
		maxPer := int(elapsed/time.Second) + 2 // one per second while refused, plus the success
		for _, o := range objs {
			rs := perSOP[o.SOPInstanceUID]
			ok := 0
			for i, r := range rs {
				if r.status == http.StatusOK {
					ok++
				}
				if i > 0 && rs[i-1].status == http.StatusServiceUnavailable {
					if gap := r.at.Sub(rs[i-1].at); gap < 900*time.Millisecond {
						t.Errorf("%s sent again %v after a 503 with Retry-After: 1", o.SOPInstanceUID, gap.Round(time.Millisecond))
					}
				}
			}
			if ok != 1 {
				t.Errorf("%s was stored by %d requests, want 1", o.SOPInstanceUID, ok)
			}
			if len(rs) > maxPer {
				t.Errorf("%s was sent %d times in %v: a hot loop", o.SOPInstanceUID, len(rs), elapsed.Round(time.Millisecond))
			}
		}
		// In all: the refusals, then one request per batch that succeeded
		// (at most one per object, and with one study there is one batch
		// unless the linger split it).
		if len(reqs) <= unavailable || len(reqs) > unavailable+n {
			t.Errorf("%d requests for %d objects with %d refusals", len(reqs), n, unavailable)
		}
		if elapsed < unavailable*time.Second*9/10 && len(reqs) == unavailable+1 {
			t.Errorf("all delivered after %v, but %d refusals each asked for 1 s", elapsed, unavailable)
		}
		fails := g.LogRecords("delivery failed; will retry")
		if len(fails) == 0 {
			t.Error("no \"delivery failed; will retry\" record: the refusals outlasted the in-request retries, the durable schedule must have taken over")
		}
		for _, f := range fails {
			if r, _ := f["reason"].(string); !strings.Contains(r, "503") {
				t.Errorf("retry logged with reason %q, want the 503", r)
			}
		}
		var shape []string
		for _, r := range reqs {
			shape = append(shape, fmt.Sprintf("%d×%d@%.1fs", r.status, len(r.sops), r.at.Sub(start).Seconds()))
		}
		t.Logf("requests (status×objects@time): %s", strings.Join(shape, " "))
		t.Logf("%d requests (%d answered 503), %d durable retries logged, all %d objects delivered in %v",
			len(reqs), unavailable, len(fails), n, elapsed.Round(time.Millisecond))
	})

	// 202 with one instance in FailedSOPSequence, FailureReason 0xC122
	// (referenced transfer syntax not supported): that object is
	// dead-lettered at once with the reason, the others are delivered.
	t.Run("202 FailureReason 0xC122", func(t *testing.T) {
		t.Parallel()
		const n = 5
		objs := studyObjects(t, t.TempDir(), n, 4<<10)
		victim := objs[2].SOPInstanceUID
		fake, srv := newSTOWFake(t, func(_ int, sops []string) (int, string, map[string]uint16) {
			for _, s := range sops {
				if s == victim {
					return http.StatusAccepted, "", map[string]uint16{victim: 0xC122}
				}
			}
			return http.StatusOK, "", nil
		})
		g := startGateway(t, t.TempDir(), append([]string{"--stow-url", srv.URL + "/dicom-web"}, fastRetry...)...)
		storeAll(t, g.Addr, "FAULTSCU", objs)
		c := waitDrained(t, g, 30*time.Second)
		if c.Dead != 1 || c.Reasons != 1 {
			t.Fatalf("spool: %v; want the one refused object dead", c)
		}
		for id, obj := range stateObjects(t, g.SpoolDir, "dead") {
			if obj.Meta.SOPInstanceUID != victim {
				t.Errorf("dead letter is %s, want %s", obj.Meta.SOPInstanceUID, victim)
			}
			if r := deadReason(t, g.SpoolDir, id); !strings.Contains(r, "0xC122") {
				t.Errorf("dead letter reason %q does not name FailureReason 0xC122", r)
			} else {
				t.Logf("dead letter reason: %s", r)
			}
		}
		reqs, stored := fake.snapshot()
		sent := map[string]int{}
		for _, r := range reqs {
			for _, s := range r.sops {
				sent[s]++
			}
		}
		recs := deliveredRecords(g)
		for _, o := range objs {
			if sent[o.SOPInstanceUID] != 1 {
				t.Errorf("%s was sent %d times, want once", o.SOPInstanceUID, sent[o.SOPInstanceUID])
			}
			if o.SOPInstanceUID == victim {
				if _, ok := stored[victim]; ok || len(recs[victim]) != 0 {
					t.Errorf("refused object counted as stored/delivered")
				}
				continue
			}
			if !bytes.Equal(stored[o.SOPInstanceUID], o.DataSet) || len(recs[o.SOPInstanceUID]) != 1 {
				t.Errorf("%s: stored %v, %d \"object delivered\" records", o.SOPInstanceUID, stored[o.SOPInstanceUID] != nil, len(recs[o.SOPInstanceUID]))
			}
		}
		dl := g.LogRecords("object dead-lettered")
		if len(dl) != 1 || dl[0]["sop_instance"] != victim || !strings.Contains(fmt.Sprint(dl[0]["reason"]), "0xC122") {
			t.Errorf("\"object dead-lettered\" records: %v", dl)
		}
	})
}
