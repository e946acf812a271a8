package conformance

// commitment_test.go: storage commitment (issue 14) against real SCUs:
// Orthanc 1.10 (its REST API sends C-STOREs with a storage commitment
// request, or a request alone, and shows the report it got), and
// dcmjs-dimse (conformance/node/stgcmt-scu.js), which takes the report on
// its own association or on a new one. The upstream is a second Orthanc,
// reached by STOW-RS, started late to show that "delivered" waits for it.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
)

const stgcmtReasonNoSuchInstance, stgcmtReasonProcessingFailure = 0x0112, 0x0110

// commitOrthanc is an Orthanc acting as a modality: the gateway is its
// modality "gw", and it listens for reports.
type commitOrthanc struct {
	*harness.Orthanc
}

// startCommitOrthanc starts an Orthanc (AE title ae) that knows the gateway
// at gwPort as "gw".
func startCommitOrthanc(t *testing.T, ae string, gwPort int) commitOrthanc {
	t.Helper()
	return commitOrthanc{startOrthanc(t, map[string]any{
		"DicomAet":        ae,
		"DicomModalities": map[string]any{"gw": []any{"DICOMGW", "127.0.0.1", gwPort}},
	})}
}

// upload puts objs into Orthanc over REST and returns their Orthanc IDs.
func (o commitOrthanc) upload(t *testing.T, objs []testObject) []string {
	t.Helper()
	var ids []string
	for _, obj := range objs {
		file, err := os.ReadFile(obj.Path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := o.Post("/instances", "application/dicom", file)
		if err != nil {
			t.Fatalf("uploading to Orthanc: %v", err)
		}
		var r struct{ ID string }
		if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
			t.Fatalf("uploading to Orthanc: %s", b)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

// storeCommitted sends Orthanc's instances to the gateway with a storage
// commitment request after them, and returns its Transaction UID.
func (o commitOrthanc) storeCommitted(t *testing.T, ids []string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"Resources": ids, "StorageCommitment": true, "Synchronous": true})
	b, err := o.Post("/modalities/gw/store", "application/json", body)
	if err != nil {
		t.Fatalf("Orthanc C-STORE with storage commitment: %v", err)
	}
	var r struct {
		FailedInstancesCount int
		TxUID                string `json:"StorageCommitmentTransactionUID"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.TxUID == "" || r.FailedInstancesCount != 0 {
		t.Fatalf("Orthanc C-STORE with storage commitment: %s", b)
	}
	return r.TxUID
}

// requestCommitment asks for a commitment on instances alone (no C-STORE).
func (o commitOrthanc) requestCommitment(t *testing.T, sopClass string, sops ...string) string {
	t.Helper()
	var insts []map[string]string
	for _, s := range sops {
		insts = append(insts, map[string]string{"SOPClassUID": sopClass, "SOPInstanceUID": s})
	}
	body, _ := json.Marshal(map[string]any{"DicomInstances": insts})
	b, err := o.Post("/modalities/gw/storage-commitment", "application/json", body)
	if err != nil {
		t.Fatalf("Orthanc storage commitment request: %v", err)
	}
	var r struct{ ID string }
	if err := json.Unmarshal(b, &r); err != nil || r.ID == "" {
		t.Fatalf("Orthanc storage commitment request: %s", b)
	}
	return r.ID
}

// commitReport is what Orthanc shows of a report.
type commitReport struct {
	Status  string // "Pending", "Success", "Failure"
	Success []struct{ SOPInstanceUID string }
	Failed  []struct {
		SOPInstanceUID string
		FailureReason  int
	} `json:"Failures"`
}

func (o commitOrthanc) report(t *testing.T, tx string) commitReport {
	t.Helper()
	var r commitReport
	if err := o.GetJSON("/storage-commitment/"+tx, &r); err != nil {
		t.Fatalf("Orthanc's storage commitment report %s: %v", tx, err)
	}
	return r
}

// waitReport waits until Orthanc has the report (its status is no longer
// Pending).
func (o commitOrthanc) waitReport(t *testing.T, tx string, timeout time.Duration, g *harness.Gateway) commitReport {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := o.report(t, tx)
		if r.Status != "Pending" {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("no storage commitment report within %v\n%s", timeout, harness.Tail(g.Logs(), 6000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// commitGateway starts a gateway on a port chosen beforehand (the SCU
// must know it before the gateway starts), with args. --archive-dir keeps
// startGateway from adding its own unreachable --stow-url and day-long
// retries, which would hold the test's destinations back.
func commitGateway(t *testing.T, spoolDir string, port int, args ...string) *harness.Gateway {
	t.Helper()
	return startGateway(t, spoolDir, append([]string{"--listen", "127.0.0.1:" + strconv.Itoa(port), "--archive-dir", t.TempDir()}, args...)...)
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCommitmentDeliveredOrthanc is the first test: Orthanc sends a
// study to dicomgw with storage commitment; dicomgw forwards by STOW-RS to a
// second Orthanc that is down at first. No success while the upstream lacks
// the instances; once it is up, Success for every one, and it has them all.
// An instance never sent is a failure 0112.
func TestCommitmentDeliveredOrthanc(t *testing.T) {
	gwPort := freePort(t)
	a := startCommitOrthanc(t, "ORTHANCA", gwPort)
	upHTTP, upDICOM := freePort(t), freePort(t)
	upURL := "http://127.0.0.1:" + strconv.Itoa(upHTTP) + "/dicom-web"
	g := commitGateway(t, t.TempDir()+"/spool", gwPort,
		append([]string{"--destination", "up=" + upURL, "--route", "{} -> up",
			"--remote-ae", "ORTHANCA=" + a.DICOMAddr()}, fastRetry...)...)

	objs := studyObjects(t, t.TempDir(), 4, 2048)
	tx := a.storeCommitted(t, a.upload(t, objs))
	// The upstream is down: the report must not come, let alone say
	// success, while the gateway retries.
	time.Sleep(6 * time.Second)
	if r := a.report(t, tx); r.Status != "Pending" {
		t.Fatalf("report while the upstream is down: %+v, want none yet", r)
	}
	m, err := g.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	if m.Get("dicomgw_commitment_open_requests", `state="waiting"`) != 1 || m.Get("dicomgw_commitment_requests_total", `outcome="accepted"`) != 1 {
		t.Errorf("metrics while waiting: open %v accepted %v", m.Get("dicomgw_commitment_open_requests", `state="waiting"`), m.Get("dicomgw_commitment_requests_total", `outcome="accepted"`))
	}
	b := startOrthanc(t, map[string]any{"HttpPort": upHTTP, "DicomPort": upDICOM})
	r := a.waitReport(t, tx, 60*time.Second, g)
	if r.Status != "Success" || len(r.Success) != len(objs) || len(r.Failed) != 0 {
		t.Fatalf("report once the upstream is up: %+v", r)
	}
	checkArrived(t, b, objs)

	// An instance never sent, beside one that was: 0112 for it alone.
	tx = a.requestCommitment(t, sopSecondaryCapture, objs[0].SOPInstanceUID, "1.2.826.0.1.3680043.2.1143.404")
	r = a.waitReport(t, tx, 30*time.Second, g)
	if r.Status != "Failure" || len(r.Success) != 1 || r.Success[0].SOPInstanceUID != objs[0].SOPInstanceUID ||
		len(r.Failed) != 1 || r.Failed[0].SOPInstanceUID != "1.2.826.0.1.3680043.2.1143.404" || r.Failed[0].FailureReason != stgcmtReasonNoSuchInstance {
		t.Fatalf("report with an instance never sent: %+v", r)
	}
	// Orthanc shows the report before the gateway has its response in
	// the ledger.
	waitMetric(t, g, 0, "dicomgw_commitment_open_requests", `state="reporting"`)
	m, err = g.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"dicomgw_commitment_reports_total", []string{`result="success"`, `via="new"`}, 1},
		{"dicomgw_commitment_reports_total", []string{`result="failures"`, `via="new"`}, 1},
		{"dicomgw_commitment_instances_total", []string{`result="committed"`}, float64(len(objs) + 1)},
		{"dicomgw_commitment_instances_total", []string{`result="no_such_instance"`}, 1},
		{"dicomgw_commitment_open_requests", []string{`state="waiting"`}, 0},
		{"dicomgw_commitment_open_requests", []string{`state="reporting"`}, 0},
	} {
		if v := m.Get(c.name, c.labels...); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
}

// TestCommitmentReceivedOrthanc: with --commitment received, success as
// soon as the instances are spooled, the upstream down.
func TestCommitmentReceivedOrthanc(t *testing.T) {
	gwPort := freePort(t)
	a := startCommitOrthanc(t, "ORTHANCA", gwPort)
	g := commitGateway(t, t.TempDir()+"/spool", gwPort, "--commitment", "received",
		"--destination", "up=http://127.0.0.1:1/dicom-web", "--route", "{} -> up",
		"--remote-ae", "ORTHANCA="+a.DICOMAddr())
	objs := studyObjects(t, t.TempDir(), 3, 1024)
	tx := a.storeCommitted(t, a.upload(t, objs))
	r := a.waitReport(t, tx, 20*time.Second, g)
	if r.Status != "Success" || len(r.Success) != len(objs) {
		t.Fatalf("report with --commitment received: %+v", r)
	}
	if c := countSpool(t, g.SpoolDir); c.Queued != len(objs) {
		t.Fatalf("spool: %v, want the %d objects still queued (upstream down)", c, len(objs))
	}
}

// TestCommitmentFanOut: with two destinations, success only once both have
// confirmed every instance.
func TestCommitmentFanOut(t *testing.T) {
	gwPort := freePort(t)
	a := startCommitOrthanc(t, "ORTHANCA", gwPort)
	one := startOrthanc(t, nil)
	twoHTTP, twoDICOM := freePort(t), freePort(t)
	g := commitGateway(t, t.TempDir()+"/spool", gwPort,
		append([]string{"--destination", "one=" + one.BaseURL(), "--destination", "two=http://127.0.0.1:" + strconv.Itoa(twoHTTP) + "/dicom-web",
			"--route", "{} -> one", "--route", "{} -> two", "--remote-ae", "ORTHANCA=" + a.DICOMAddr()}, fastRetry...)...)
	objs := studyObjects(t, t.TempDir(), 3, 1024)
	tx := a.storeCommitted(t, a.upload(t, objs))
	if _, err := one.WaitInstances(len(objs), 30*time.Second); err != nil {
		t.Fatalf("destination one: %v", err)
	}
	time.Sleep(3 * time.Second)
	if r := a.report(t, tx); r.Status != "Pending" {
		t.Fatalf("report with one destination of two done: %+v, want none yet", r)
	}
	two := startOrthanc(t, map[string]any{"HttpPort": twoHTTP, "DicomPort": twoDICOM})
	r := a.waitReport(t, tx, 60*time.Second, g)
	if r.Status != "Success" || len(r.Success) != len(objs) {
		t.Fatalf("report once both have them: %+v", r)
	}
	checkArrived(t, one, objs)
	checkArrived(t, two, objs)
}

// TestCommitmentTimeout: not delivered within --commitment-timeout: every
// instance fails with 0110.
func TestCommitmentTimeout(t *testing.T) {
	gwPort := freePort(t)
	a := startCommitOrthanc(t, "ORTHANCA", gwPort)
	g := commitGateway(t, t.TempDir()+"/spool", gwPort, "--commitment-timeout", "3s",
		"--destination", "up=http://127.0.0.1:1/dicom-web", "--route", "{} -> up",
		"--remote-ae", "ORTHANCA="+a.DICOMAddr())
	objs := studyObjects(t, t.TempDir(), 2, 1024)
	tx := a.storeCommitted(t, a.upload(t, objs))
	r := a.waitReport(t, tx, 20*time.Second, g)
	if r.Status != "Failure" || len(r.Failed) != len(objs) || len(r.Success) != 0 {
		t.Fatalf("report after the timeout: %+v", r)
	}
	for _, f := range r.Failed {
		if f.FailureReason != stgcmtReasonProcessingFailure {
			t.Errorf("%s: reason %#x, want 0x0110", f.SOPInstanceUID, f.FailureReason)
		}
	}
}

// scuEvent is a line stgcmt-scu.js prints.
type scuEvent struct {
	Event          string
	Status         int
	Via            string
	EventTypeID    int
	TransactionUID string
	Success        []string
	Failed         []struct {
		Instance string
		Reason   int
	}
	CallingAE, CalledAE string
	Message             string
}

// dcmjsSCU runs the dcmjs-dimse storage commitment SCU with req and returns
// what it printed.
func dcmjsSCU(t *testing.T, req map[string]any) []scuEvent {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed: make test installs nodejs and dcmjs-dimse (scripts/install-test-deps.sh)")
	}
	dir := filepath.Join(harness.RepoRoot(), "conformance", "node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "dcmjs-dimse")); err != nil {
		t.Fatal("dcmjs-dimse is not installed in conformance/node: make test installs it (npm ci)")
	}
	in, _ := json.Marshal(req)
	cmd := exec.Command(node, filepath.Join(dir, "stgcmt-scu.js"))
	cmd.Stdin = strings.NewReader(string(in))
	cmd.Dir = dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var events []scuEvent
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var e scuEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("stgcmt-scu.js printed %q", sc.Text())
		}
		events = append(events, e)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("stgcmt-scu.js: %v\n%s", err, stderr.String())
	}
	return events
}

func eventsOf(events []scuEvent, name string) []scuEvent {
	var out []scuEvent
	for _, e := range events {
		if e.Event == name {
			out = append(out, e)
		}
	}
	return out
}

// TestCommitmentDcmjs: a second SCU implementation. On its own
// association, kept open, it gets the report there; released at once, on
// a new association it accepts as the SCP; from an AE title with no
// --remote-ae, the request is refused (0124); with --commitment off, the
// SOP class is not offered.
func TestCommitmentDcmjs(t *testing.T) {
	reportPort := freePort(t)
	g := startGateway(t, t.TempDir()+"/spool", "--commitment", "received", "--remote-ae", "DCMJS=127.0.0.1:"+strconv.Itoa(reportPort))
	objs := studyObjects(t, t.TempDir(), 2, 512)
	storeAll(t, g.Addr, "DCMJS", objs)
	refs := []map[string]string{{"class": sopSecondaryCapture, "instance": objs[0].SOPInstanceUID}, {"class": sopSecondaryCapture, "instance": objs[1].SOPInstanceUID}}
	host, port := splitAddr(g.Addr)
	p, _ := strconv.Atoi(port)
	base := func(tx, calling string) map[string]any {
		return map[string]any{"host": host, "port": p, "callingAE": calling, "calledAE": "DICOMGW", "transactionUID": tx, "refs": refs}
	}

	t.Run("same association", func(t *testing.T) {
		req := base("1.2.826.0.1.3680043.2.1143.7.1", "DCMJS")
		req["lingerMs"] = 4000
		ev := dcmjsSCU(t, req)
		rsp, rep := eventsOf(ev, "n-action-rsp"), eventsOf(ev, "n-event-report")
		if len(rsp) != 1 || rsp[0].Status != 0 || len(rep) != 1 || rep[0].Via != "same" || rep[0].EventTypeID != 1 ||
			rep[0].TransactionUID != "1.2.826.0.1.3680043.2.1143.7.1" || len(rep[0].Success) != 2 || len(rep[0].Failed) != 0 {
			t.Fatalf("dcmjs-dimse on its own association: %+v\n%s", ev, harness.Tail(g.Logs(), 4000))
		}
	})
	t.Run("new association", func(t *testing.T) {
		req := base("1.2.826.0.1.3680043.2.1143.7.2", "DCMJS")
		req["refs"] = append(slices.Clone(refs), map[string]string{"class": sopSecondaryCapture, "instance": "1.2.826.0.1.3680043.2.1143.404"})
		req["listenPort"], req["waitMs"] = reportPort, 9000
		ev := dcmjsSCU(t, req)
		rep, assoc := eventsOf(ev, "n-event-report"), eventsOf(ev, "association")
		if len(rep) != 1 || rep[0].Via != "new" || rep[0].EventTypeID != 2 || len(rep[0].Success) != 2 ||
			len(rep[0].Failed) != 1 || rep[0].Failed[0].Reason != stgcmtReasonNoSuchInstance || rep[0].Failed[0].Instance != "1.2.826.0.1.3680043.2.1143.404" {
			t.Fatalf("dcmjs-dimse listening for the report: %+v\n%s", ev, harness.Tail(g.Logs(), 4000))
		}
		if len(assoc) != 1 || assoc[0].CallingAE != "DICOMGW" || assoc[0].CalledAE != "DCMJS" {
			t.Errorf("the report's association: %+v, want DICOMGW calling DCMJS", assoc)
		}
	})
	t.Run("refused without --remote-ae", func(t *testing.T) {
		ev := dcmjsSCU(t, base("1.2.826.0.1.3680043.2.1143.7.3", "STRANGER"))
		rsp := eventsOf(ev, "n-action-rsp")
		if len(rsp) != 1 || rsp[0].Status != int(dimse.StatusNotAuthorized) || len(eventsOf(ev, "n-event-report")) != 0 {
			t.Fatalf("request from an AE without --remote-ae: %+v", ev)
		}
	})
	waitMetric(t, g, 0, "dicomgw_commitment_open_requests", `state="reporting"`)
	m, err := g.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	if m.Get("dicomgw_commitment_reports_total", `result="success"`, `via="same"`) != 1 ||
		m.Get("dicomgw_commitment_reports_total", `result="failures"`, `via="new"`) != 1 ||
		m.Get("dicomgw_commitment_requests_total", `outcome="refused"`) != 1 {
		t.Errorf("metrics: %v", fmt.Sprint(m.Get("dicomgw_commitment_reports_total", `result="success"`, `via="same"`),
			m.Get("dicomgw_commitment_reports_total", `result="failures"`, `via="new"`), m.Get("dicomgw_commitment_requests_total", `outcome="refused"`)))
	}

	t.Run("off", func(t *testing.T) {
		off := startGateway(t, t.TempDir()+"/spool", "--commitment", "off", "--remote-ae", "DCMJS=127.0.0.1:"+strconv.Itoa(reportPort))
		h, po := splitAddr(off.Addr)
		pn, _ := strconv.Atoi(po)
		req := base("1.2.826.0.1.3680043.2.1143.7.4", "DCMJS")
		req["host"], req["port"] = h, pn
		ev := dcmjsSCU(t, req)
		if rsp := eventsOf(ev, "n-action-rsp"); len(rsp) == 1 && rsp[0].Status == 0 {
			t.Fatalf("--commitment off accepted a request: %+v", ev)
		}
		if !strings.Contains(off.Logs(), `"accepted":0`) && !strings.Contains(off.Logs(), "accepted=0") {
			t.Errorf("--commitment off: the storage commitment context was not rejected:\n%s", harness.Tail(off.Logs(), 3000))
		}
	})
}

// TestCommitmentRestart: a request pending when the gateway stops is
// reported after it restarts, exactly once, even if it restarts with
// --commitment off.
func TestCommitmentRestart(t *testing.T) {
	reportPort := freePort(t)
	upHTTP, upDICOM := freePort(t), freePort(t)
	spoolDir := t.TempDir() + "/spool"
	args := append([]string{"--archive-dir", t.TempDir(), "--destination", "up=http://127.0.0.1:" + strconv.Itoa(upHTTP) + "/dicom-web", "--route", "{} -> up",
		"--remote-ae", "DCMJS=127.0.0.1:" + strconv.Itoa(reportPort)}, fastRetry...)
	g := startGateway(t, spoolDir, args...)
	objs := studyObjects(t, t.TempDir(), 2, 512)
	storeAll(t, g.Addr, "DCMJS", objs)
	host, port := splitAddr(g.Addr)
	p, _ := strconv.Atoi(port)
	req := map[string]any{"host": host, "port": p, "callingAE": "DCMJS", "calledAE": "DICOMGW", "transactionUID": "1.2.826.0.1.3680043.2.1143.8.1",
		"refs": []map[string]string{{"class": sopSecondaryCapture, "instance": objs[0].SOPInstanceUID}, {"class": sopSecondaryCapture, "instance": objs[1].SOPInstanceUID}}}
	if ev := dcmjsSCU(t, req); len(eventsOf(ev, "n-action-rsp")) != 1 || eventsOf(ev, "n-action-rsp")[0].Status != 0 {
		t.Fatalf("request: %+v", ev)
	}
	if err := g.Stop(20 * time.Second); err != nil {
		t.Fatalf("stopping the gateway: %v", err)
	}
	// Restarted on the same port, with the upstream up: the report comes,
	// on a new association (the requester's is long gone), once; and
	// although the gateway now runs with --commitment off (new requests
	// refused), what it accepted before is answered.
	g2 := startGateway(t, spoolDir, append(append([]string{"--listen", g.Addr}, args...), "--commitment", "off")...)
	// The requester listens for reports (and asks again under another
	// Transaction UID, which is refused) before the upstream is up.
	events := make(chan []scuEvent, 1)
	go func() {
		events <- dcmjsSCU(t, map[string]any{"host": host, "port": p, "callingAE": "DCMJS", "calledAE": "DICOMGW",
			"transactionUID": "1.2.826.0.1.3680043.2.1143.8.2", "refs": req["refs"], "listenPort": reportPort, "waitMs": 14000})
	}()
	time.Sleep(time.Second)
	up := startOrthanc(t, map[string]any{"HttpPort": upHTTP, "DicomPort": upDICOM})
	ev := <-events
	var reports []scuEvent
	for _, e := range eventsOf(ev, "n-event-report") {
		if e.TransactionUID == "1.2.826.0.1.3680043.2.1143.8.1" {
			reports = append(reports, e)
		}
	}
	if len(reports) != 1 || reports[0].EventTypeID != 1 || len(reports[0].Success) != 2 {
		t.Fatalf("reports of the request made before the restart: %+v (all: %+v)\n%s", reports, ev, harness.Tail(g2.Logs(), 6000))
	}
	checkArrived(t, up, objs)
}

// TestCommitmentRemoteAEReloadAndTLS: --remote-ae is re-read on SIGHUP (a
// request refused before is accepted after), and a report goes over DICOM
// TLS to a requester listening with a certificate the gateway checks
// against ca-file.
func TestCommitmentRemoteAEReloadAndTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := harness.NewPKI(filepath.Join(dir, "ca"), "modality-ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("modality")
	if err != nil {
		t.Fatal(err)
	}
	reportPort := freePort(t)
	flags := filepath.Join(dir, "dicomgw.flags")
	write := func(s string) {
		if err := os.WriteFile(flags, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("--commitment=received\n--remote-ae=OTHER=127.0.0.1:1\n")
	g := startGateway(t, dir+"/spool", "--flagfile", flags)
	objs := studyObjects(t, t.TempDir(), 2, 512)
	storeAll(t, g.Addr, "DCMJS", objs)
	host, port := splitAddr(g.Addr)
	p, _ := strconv.Atoi(port)
	req := map[string]any{"host": host, "port": p, "callingAE": "DCMJS", "calledAE": "DICOMGW", "transactionUID": "1.2.826.0.1.3680043.2.1143.9.1",
		"refs": []map[string]string{{"class": sopSecondaryCapture, "instance": objs[0].SOPInstanceUID}, {"class": sopSecondaryCapture, "instance": objs[1].SOPInstanceUID}}}
	if rsp := eventsOf(dcmjsSCU(t, req), "n-action-rsp"); len(rsp) != 1 || rsp[0].Status != int(dimse.StatusNotAuthorized) {
		t.Fatalf("before the reload: %+v, want 0124", rsp)
	}

	write(fmt.Sprintf("--commitment=received\n--remote-ae=DCMJS=127.0.0.1:%d tls=true ca-file=%s timeout=10s\n", reportPort, ca.CAFile))
	g.Signal(syscall.SIGHUP)
	if _, err := g.WaitLog("config reloaded", 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	req["transactionUID"] = "1.2.826.0.1.3680043.2.1143.9.2"
	// An instance never sent holds the answer for the 5 s grace, long
	// after the requester released its association: the report can only
	// go on a new one (decided at once, it could also be taken on the
	// requester's own association, which a clean-clone CI run saw).
	req["refs"] = append(req["refs"].([]map[string]string), map[string]string{"class": sopSecondaryCapture, "instance": "1.2.826.0.1.3680043.2.1143.9.404"})
	req["listenPort"], req["waitMs"], req["tlsCertFile"], req["tlsKeyFile"] = reportPort, 10000, srv.CertFile, srv.KeyFile
	ev := dcmjsSCU(t, req)
	var viaNew []scuEvent
	for _, e := range eventsOf(ev, "n-event-report") {
		if e.Via == "new" {
			viaNew = append(viaNew, e)
		}
	}
	rsp := eventsOf(ev, "n-action-rsp")
	if len(rsp) != 1 || rsp[0].Status != 0 || len(viaNew) != 1 || viaNew[0].EventTypeID != 2 || len(viaNew[0].Success) != 2 ||
		len(viaNew[0].Failed) != 1 || len(eventsOf(ev, "n-event-report")) != 1 {
		t.Fatalf("after the reload, report over TLS: %+v\n%s", ev, harness.Tail(g.Logs(), 4000))
	}
}
