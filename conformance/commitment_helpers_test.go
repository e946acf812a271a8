package conformance

// commitment_helpers_test.go: the two storage commitment SCUs the
// commitment tests drive. Orthanc 1.10 through its REST API (it stores to a
// modality and asks for commitment, and keeps the report it gets at
// /storage-commitment/{transaction UID}), and dcmjs-dimse through
// conformance/node/stgcmt-scu.js (one N-ACTION, then every event as a JSON
// line: the N-ACTION-RSP, a report on its own association or, listening,
// on a new one).

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// Storage Commitment Push Model (PS3.4 J.3) and the Failure Reasons the
// gateway gives (PS3.4 J.3.3.1.1.1 / PS3.7 C.4.2.1.5: 0110 processing
// failure, 0112 no such object instance, 0119 class/instance conflict) and
// the N-ACTION-RSP status of a requester it cannot reach (0124).
const (
	sopStorageCommitment = "1.2.840.10008.1.20.1"

	reasonProcessingFailure = 0x0110
	reasonNoSuchInstance    = 0x0112
	reasonClassConflict     = 0x0119
	statusNotAuthorized     = 0x0124
)

// nodePackage is the Debian package of node; npm ci (from
// conformance/node/package-lock.json) installs dcmjs-dimse.
const nodePackage = "nodejs"

// scuRef is one Referenced SOP Sequence item of a request.
type scuRef struct {
	Class    string `json:"class"`
	Instance string `json:"instance"`
}

// scuRequest is what stgcmt-scu.js reads on stdin.
type scuRequest struct {
	Host           string   `json:"host"`
	Port           int      `json:"port"`
	CallingAE      string   `json:"callingAE"`
	CalledAE       string   `json:"calledAE"`
	TransactionUID string   `json:"transactionUID"`
	Refs           []scuRef `json:"refs"`
	LingerMs       int      `json:"lingerMs,omitempty"`   // keep the association open after the N-ACTION-RSP
	ListenPort     int      `json:"listenPort,omitempty"` // listen for a report on a new association
	WaitMs         int      `json:"waitMs,omitempty"`     // then exit after this long (0: until killed)
}

// stgEvent is one line stgcmt-scu.js prints.
type stgEvent struct {
	Event          string `json:"event"`
	Status         *int   `json:"status"`  // n-action-rsp
	Comment        string `json:"comment"` // n-action-rsp
	Accepted       bool   `json:"accepted"`
	Via            string `json:"via"` // n-event-report: same, new
	EventTypeID    int    `json:"eventTypeId"`
	TransactionUID string `json:"transactionUID"`
	Success        []string
	Failed         []struct {
		Instance string `json:"instance"`
		Reason   int    `json:"reason"`
	} `json:"failed"`
	CallingAE string `json:"callingAE"` // association (to the listener)
	CalledAE  string `json:"calledAE"`
	Roles     *struct {
		SCU *bool `json:"scu"`
		SCP *bool `json:"scp"`
	} `json:"roles"`
	Message string `json:"message"` // error

	line string
}

func (e stgEvent) String() string { return e.line }

// stgcmtSCU is a running stgcmt-scu.js.
type stgcmtSCU struct {
	*harness.Process
	mu     sync.Mutex
	events []stgEvent
	more   chan struct{} // closed and replaced at each event
}

// nodeScript returns node's path and the directory of stgcmt-scu.js, or
// fails the test saying how to install what is missing: like dcmtk and
// Orthanc, a second SCU implementation is evidence we do not skip.
func nodeScript(t testing.TB) (string, string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed: install the Debian package %q (scripts/install-test-deps.sh does it)", nodePackage)
	}
	dir := filepath.Join(harness.RepoRoot(), "conformance", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "dcmjs-dimse")); err != nil {
		t.Fatalf("dcmjs-dimse is not installed in %s: run scripts/install-test-deps.sh (npm ci there)", dir)
	}
	return node, dir
}

// startSCU runs stgcmt-scu.js on req and kills it when the test ends.
func startSCU(t testing.TB, req scuRequest) *stgcmtSCU {
	t.Helper()
	node, dir := nodeScript(t)
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	s := &stgcmtSCU{more: make(chan struct{})}
	cmd := exec.Command(node, "stgcmt-scu.js")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	p, err := harness.StartProcess(cmd, func(line string) {
		var e stgEvent
		// dcmjs-dimse writes its own log lines (stderr): not events.
		if json.Unmarshal([]byte(line), &e) != nil || e.Event == "" {
			return
		}
		e.line = line
		s.mu.Lock()
		s.events = append(s.events, e)
		close(s.more)
		s.more = make(chan struct{})
		s.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("starting stgcmt-scu.js: %v", err)
	}
	s.Process = p
	t.Cleanup(func() {
		select {
		case <-p.Exited():
		default:
			p.Kill()
			<-p.Exited()
		}
		if t.Failed() {
			t.Logf("stgcmt-scu.js (%s) output:\n%s", req.CallingAE, harness.Tail(p.Output(), 6000))
		}
	})
	return s
}

// Events returns the events of one kind so far ("" for all).
func (s *stgcmtSCU) Events(kind string) []stgEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []stgEvent
	for _, e := range s.events {
		if kind == "" || e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}

// wait returns the first event of kind, waiting up to timeout for it;
// the script ending without it, or the timeout, fails the test.
func (s *stgcmtSCU) wait(t testing.TB, kind string, timeout time.Duration) stgEvent {
	t.Helper()
	e, ok := s.waitFor(timeout, kind)
	if !ok {
		t.Fatalf("stgcmt-scu.js: no %s event within %v; its events: %v", kind, timeout, s.Events(""))
	}
	return e
}

// waitFor returns the first event of any of kinds, waiting up to timeout
// for one; false when none came.
func (s *stgcmtSCU) waitFor(timeout time.Duration, kinds ...string) (stgEvent, bool) {
	deadline := time.After(timeout)
	first := func() (stgEvent, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, e := range s.events {
			if slices.Contains(kinds, e.Event) {
				return e, true
			}
		}
		return stgEvent{}, false
	}
	for {
		s.mu.Lock()
		more := s.more
		s.mu.Unlock()
		if e, ok := first(); ok {
			return e, true
		}
		select {
		case <-more:
		case <-s.Exited():
			// The last lines are in before Exited is closed.
			return first()
		case <-deadline:
			return stgEvent{}, false
		}
	}
}

// actionStatus waits for the N-ACTION-RSP and returns its status.
func (s *stgcmtSCU) actionStatus(t testing.TB) (int, string) {
	t.Helper()
	// An association without the N-ACTION (dcmjs-dimse skips a request
	// whose context was rejected) ends with "released".
	e, ok := s.waitFor(30*time.Second, "n-action-rsp", "released")
	if !ok || e.Event != "n-action-rsp" {
		t.Fatalf("stgcmt-scu.js: no n-action-rsp; its events: %v", s.Events(""))
	}
	if e.Status == nil {
		t.Fatalf("n-action-rsp without a status: %v", e)
	}
	return *e.Status, e.Comment
}

// refsOf lists objects as Referenced SOP Sequence items.
func refsOf(objs []testObject) []scuRef {
	out := make([]scuRef, len(objs))
	for i, o := range objs {
		out[i] = scuRef{Class: sopSecondaryCapture, Instance: o.SOPInstanceUID}
	}
	return out
}

// checkReport checks that a report names transaction uid, has Event Type
// ID 1 or 2 as it should, and lists exactly success in Referenced SOP
// Sequence and failed (instance -> Failure Reason) in Failed SOP Sequence.
func checkReport(t testing.TB, e stgEvent, uid string, success []string, failed map[string]int) {
	t.Helper()
	if e.TransactionUID != uid {
		t.Errorf("report: Transaction UID %q, want %q", e.TransactionUID, uid)
	}
	wantType := 1
	if len(failed) > 0 {
		wantType = 2
	}
	if e.EventTypeID != wantType {
		t.Errorf("report: Event Type ID %d, want %d", e.EventTypeID, wantType)
	}
	got := map[string]bool{}
	for _, s := range e.Success {
		got[s] = true
	}
	for _, s := range success {
		if !got[s] {
			t.Errorf("report: %s not in Referenced SOP Sequence", s)
		}
	}
	if len(e.Success) != len(success) {
		t.Errorf("report: %d instances in Referenced SOP Sequence, want %d: %v", len(e.Success), len(success), e.Success)
	}
	gotFailed := map[string]int{}
	for _, f := range e.Failed {
		gotFailed[f.Instance] = f.Reason
	}
	for inst, reason := range failed {
		if r, ok := gotFailed[inst]; !ok {
			t.Errorf("report: %s not in Failed SOP Sequence", inst)
		} else if r != reason {
			t.Errorf("report: %s failed with reason %04X, want %04X", inst, r, reason)
		}
	}
	if len(e.Failed) != len(failed) {
		t.Errorf("report: %d instances in Failed SOP Sequence, want %d: %v", len(e.Failed), len(failed), e.Failed)
	}
}

// instanceUIDs lists objects' SOP Instance UIDs.
func instanceUIDs(objs []testObject) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.SOPInstanceUID
	}
	return out
}

// orthancREST sends a JSON body (nil: none) to Orthanc's REST API and
// returns the answer of a 200; anything else fails the test.
func orthancREST(t testing.TB, o *harness.Orthanc, method, path string, body any) []byte {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, o.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	// A connection of its own: Orthanc closes idle keep-alive connections,
	// and a request sent on one as it closes fails with EOF.
	req.Close = true
	c := &http.Client{Timeout: 60 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("Orthanc %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Orthanc %s %s: %s: %s", method, path, resp.Status, harness.Tail(out.String(), 1000))
	}
	return out.Bytes()
}

// addModality declares a DICOM modality to Orthanc (PUT /modalities/{name}).
func addModality(t testing.TB, o *harness.Orthanc, name, aet, addr string) {
	t.Helper()
	host, port := splitAddr(addr)
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	orthancREST(t, o, http.MethodPut, "/modalities/"+name, map[string]any{"AET": aet, "Host": host, "Port": p})
}

// uploadObjects stores objects into Orthanc by REST and returns Orthanc's
// instance IDs.
func uploadObjects(t testing.TB, o *harness.Orthanc, objs []testObject) []string {
	t.Helper()
	ids := make([]string, len(objs))
	for i, obj := range objs {
		file, err := os.ReadFile(obj.Path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := o.Post("/instances", "application/dicom", file)
		if err != nil {
			t.Fatalf("uploading %s to Orthanc: %v", obj.SOPInstanceUID, err)
		}
		var r struct{ ID, Status string }
		if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
			t.Fatalf("uploading %s to Orthanc: %s", obj.SOPInstanceUID, b)
		}
		ids[i] = r.ID
	}
	return ids
}

// orthancStoreCommit has Orthanc send its instances ids to modality with
// C-STORE and then ask it for storage commitment (POST
// /modalities/{id}/store, "StorageCommitment": true; synchronous) and
// returns the transaction UID of the request.
func orthancStoreCommit(t testing.TB, o *harness.Orthanc, modality string, ids []string) string {
	t.Helper()
	b := orthancREST(t, o, http.MethodPost, "/modalities/"+modality+"/store",
		map[string]any{"Resources": ids, "StorageCommitment": true, "Synchronous": true})
	var r struct {
		FailedInstancesCount, InstancesCount int
		StorageCommitmentTransactionUID      string
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("Orthanc's store answer: %v: %s", err, b)
	}
	if r.FailedInstancesCount != 0 || r.InstancesCount != len(ids) || r.StorageCommitmentTransactionUID == "" {
		t.Fatalf("Orthanc's store answer: %s", b)
	}
	return r.StorageCommitmentTransactionUID
}

// orthancCommit has Orthanc ask modality for storage commitment of refs
// (POST /modalities/{id}/storage-commitment) and returns the transaction
// UID.
func orthancCommit(t testing.TB, o *harness.Orthanc, modality string, refs []scuRef) string {
	t.Helper()
	var list []map[string]string
	for _, r := range refs {
		list = append(list, map[string]string{"SOPClassUID": r.Class, "SOPInstanceUID": r.Instance})
	}
	b := orthancREST(t, o, http.MethodPost, "/modalities/"+modality+"/storage-commitment", map[string]any{"DicomInstances": list})
	var r struct{ ID string }
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		t.Fatalf("Orthanc's storage-commitment answer: %s", b)
	}
	return r.ID
}

// orthancReport is what Orthanc keeps of a storage commitment report
// (GET /storage-commitment/{uid}): Status Pending until the report came,
// then Success or Failure.
type orthancReport struct {
	Status    string
	RemoteAET string
	Success   []struct{ SOPClassUID, SOPInstanceUID string }
	Failures  []struct {
		SOPClassUID, SOPInstanceUID string
		FailureReason               int
		Description                 string
	}
}

func (r orthancReport) String() string {
	b, _ := json.Marshal(r)
	return string(b)
}

func getOrthancReport(t testing.TB, o *harness.Orthanc, uid string) orthancReport {
	t.Helper()
	var r orthancReport
	if err := json.Unmarshal(orthancREST(t, o, http.MethodGet, "/storage-commitment/"+uid, nil), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// waitOrthancReport polls Orthanc until the report of uid is no longer
// Pending.
func waitOrthancReport(t testing.TB, o *harness.Orthanc, uid string, timeout time.Duration) orthancReport {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := getOrthancReport(t, o, uid)
		if r.Status != "Pending" {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("Orthanc: storage commitment %s still %s after %v", uid, r.Status, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stayPending checks that the report of uid stays Pending in Orthanc for
// d: the gateway must not answer before it can say success.
func stayPending(t testing.TB, o *harness.Orthanc, uid string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if r := getOrthancReport(t, o, uid); r.Status != "Pending" {
			t.Fatalf("Orthanc: storage commitment %s answered before the instances could be delivered: %v", uid, r)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// checkOrthancReport checks an Orthanc report: from remoteAET, success
// listing exactly success, failures exactly failed (instance -> reason).
func checkOrthancReport(t testing.TB, r orthancReport, remoteAET string, success []string, failed map[string]int) {
	t.Helper()
	want := "Success"
	if len(failed) > 0 {
		want = "Failure"
	}
	if r.Status != want || r.RemoteAET != remoteAET {
		t.Errorf("Orthanc's report: status %q from %q, want %q from %q: %v", r.Status, r.RemoteAET, want, remoteAET, r)
	}
	got := map[string]bool{}
	for _, s := range r.Success {
		got[s.SOPInstanceUID] = true
	}
	for _, s := range success {
		if !got[s] {
			t.Errorf("Orthanc's report: %s not among the successes", s)
		}
	}
	if len(r.Success) != len(success) {
		t.Errorf("Orthanc's report: %d successes, want %d", len(r.Success), len(success))
	}
	gotFailed := map[string]int{}
	for _, f := range r.Failures {
		gotFailed[f.SOPInstanceUID] = f.FailureReason
	}
	for inst, reason := range failed {
		if g, ok := gotFailed[inst]; !ok {
			t.Errorf("Orthanc's report: %s not among the failures", inst)
		} else if g != reason {
			t.Errorf("Orthanc's report: %s failed with reason %04X, want %04X", inst, g, reason)
		}
	}
	if len(r.Failures) != len(failed) {
		t.Errorf("Orthanc's report: %d failures, want %d", len(r.Failures), len(failed))
	}
}

// waitHolds polls Orthanc until it holds every one of objs.
func waitHolds(t testing.TB, o *harness.Orthanc, objs []testObject, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		uids, err := o.SOPInstanceUIDs()
		missing := 0
		for _, obj := range objs {
			if uids[obj.SOPInstanceUID] == "" {
				missing++
			}
		}
		if err == nil && missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Orthanc lacks %d of %d instances after %v (%v)", missing, len(objs), timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
