package conformance

// routing_test.go: issue 13 through the binary. Several destinations
// chosen by AE title and header, one spool, a delivery ledger: objects
// arrive exactly where their routes say (real Orthancs by STOW-RS, a real
// storescp and Orthanc's DICOM port by C-STORE, an archive), fan-out waits
// for every destination before a file leaves the spool, a destination down
// delays nobody else, and `spool trace` answers after files are gone.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// modalityObjects writes n Secondary Capture objects of one new study, of
// the given modality, into dir.
func modalityObjects(t testing.TB, dir, modality string, n, pixelBytes int) []testObject {
	t.Helper()
	study, series := harness.NewUID(), harness.NewUID()
	rng := rand.New(rand.NewPCG(uint64(n), uint64(len(modality))))
	out := make([]testObject, n)
	for i := range out {
		inst := harness.NewUID()
		var e harness.Elements
		e.Str(0x0008, 0x0016, "UI", sopSecondaryCapture)
		e.Str(0x0008, 0x0018, "UI", inst)
		e.Str(0x0008, 0x0060, "CS", modality)
		e.Str(0x0010, 0x0010, "PN", "ROUTING^TEST")
		e.Str(0x0010, 0x0020, "LO", "DICOMGW-RT")
		e.Str(0x0020, 0x000D, "UI", study)
		e.Str(0x0020, 0x000E, "UI", series)
		e.Str(0x0020, 0x0013, "IS", strconv.Itoa(i+1))
		px := make([]byte, pixelBytes&^1)
		for j := 0; j+8 <= len(px); j += 8 {
			binary.LittleEndian.PutUint64(px[j:], rng.Uint64())
		}
		e.Add(0x7FE0, 0x0010, "OW", px)
		path := filepath.Join(dir, fmt.Sprintf("%s-%04d.dcm", modality, i))
		writeObject(t, path, sopSecondaryCapture, inst, e, 0)
		out[i] = testObject{Path: path, SOPInstanceUID: inst, StudyInstanceUID: study, DataSet: e}
	}
	return out
}

// storeAs sends objects over one association called calledAE, and returns
// each object's status.
func storeAs(t testing.TB, addr, callingAE, calledAE string, objs []testObject) []dimse.Status {
	t.Helper()
	c, err := dialErr(addr, callingAE, calledAE, storeContext(sopSecondaryCapture, tsExplicitLE))
	if err != nil {
		t.Fatalf("association called %s: %v", calledAE, err)
	}
	defer c.Close()
	var out []dimse.Status
	for _, o := range objs {
		rsp, err := c.Store(sopSecondaryCapture, o.SOPInstanceUID, tsExplicitLE, bytes.NewReader(o.DataSet))
		if err != nil {
			t.Fatalf("C-STORE of %s: %v", o.SOPInstanceUID, err)
		}
		out = append(out, rsp.Status)
	}
	if err := c.Release(); err != nil {
		t.Errorf("release: %v", err)
	}
	return out
}

func storeAllAs(t testing.TB, addr, callingAE, calledAE string, objs []testObject) {
	t.Helper()
	for i, st := range storeAs(t, addr, callingAE, calledAE, objs) {
		if st != dimse.StatusSuccess {
			t.Fatalf("C-STORE of %s called %s: status %v, want 0000", objs[i].SOPInstanceUID, calledAE, st)
		}
	}
}

// storescpDataSets reads what a storescp wrote, by SOP Instance UID.
func storescpDataSets(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		fm, ds, err := harness.ParsePart10(b)
		if err != nil {
			continue
		}
		out[fm.MediaStorageSOPInstanceUID] = ds
	}
	return out
}

// archiveDataSets reads an archive directory's objects, by SOP Instance
// UID (file names).
func archiveDataSets(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(p, ".dcm") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		_, ds, err := harness.ParsePart10(b)
		if err == nil {
			out[strings.TrimSuffix(filepath.Base(p), ".dcm")] = ds
		}
		return nil
	})
	return out
}

// checkHas checks that got holds exactly want, data sets byte for byte.
func checkHas(t testing.TB, where string, got map[string][]byte, want []testObject) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s holds %d objects, want %d", where, len(got), len(want))
	}
	for _, o := range want {
		ds, ok := got[o.SOPInstanceUID]
		if !ok {
			t.Errorf("%s lacks %s", where, o.SOPInstanceUID)
		} else if !bytes.Equal(ds, o.DataSet) {
			t.Errorf("%s: %s differs from what was sent: %s", where, o.SOPInstanceUID, firstDiff(ds, o.DataSet))
		}
	}
}

// orthancDataSets reads every instance an Orthanc holds, by SOP UID.
func orthancDataSets(t testing.TB, o *harness.Orthanc) map[string][]byte {
	t.Helper()
	uids, err := o.SOPInstanceUIDs()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for sop, id := range uids {
		file, err := o.Get("/instances/" + id + "/file")
		if err != nil {
			t.Fatal(err)
		}
		out[sop] = dataSetOfFile(t, file)
	}
	return out
}

// TestRoutingByAETitleAndHeader: storescu and our requestor send with
// called AE titles PROJ1 and PROJ2 and objects of two modalities; routes
// send PROJ1 to Orthanc A (STOW-RS), PROJ2 to Orthanc B (STOW-RS) and to a
// dcmtk storescp (C-STORE), and every MR object to an archive. Each object
// arrives exactly where its routes say, nowhere else, byte for byte; a
// called AE no route selects is refused 1/1/7, one a regexp route selects
// is accepted; an object no route matches is refused 0124 and stored
// nowhere.
func TestRoutingByAETitleAndHeader(t *testing.T) {
	t.Parallel()
	a := startOrthanc(t, nil)
	b := startOrthanc(t, nil)
	scp := startStorescp(t, "PACSSCP", "+B", "-xf", scpProfile(t, t.TempDir(), []string{sopSecondaryCapture}), "P")
	archive := t.TempDir()
	g := startGateway(t, t.TempDir(), append([]string{
		"--destination", "a=" + a.BaseURL(),
		"--destination", "b=" + b.BaseURL(),
		"--destination", "pacs=dicom://PACSSCP@" + scp.Addr(),
		"--destination", "mr=file://" + archive,
		"--route", `{called_ae="PROJ1"} -> a`,
		"--route", `{called_ae="PROJ2"} -> b,pacs`,
		"--route", `{called_ae=~"KP-.+"} -> a`,
		"--route", `{Modality="MR"} -> mr`,
	}, fastRetry...)...)

	p1ot, p1mr := modalityObjects(t, t.TempDir(), "OT", 3, 6<<10), modalityObjects(t, t.TempDir(), "MR", 2, 6<<10)
	p2ot, p2mr := modalityObjects(t, t.TempDir(), "CT", 3, 6<<10), modalityObjects(t, t.TempDir(), "MR", 2, 6<<10)
	kp, gwMR, gwOT := modalityObjects(t, t.TempDir(), "US", 2, 4<<10), modalityObjects(t, t.TempDir(), "MR", 1, 4<<10), modalityObjects(t, t.TempDir(), "OT", 1, 4<<10)

	storeAllAs(t, g.Addr, "MODALITY1", "PROJ1", append(append([]testObject{}, p1ot...), p1mr...))
	// PROJ2's objects through dcmtk's storescu.
	storescu := needTool(t, "storescu")
	files := []string{}
	for _, o := range append(append([]testObject{}, p2ot...), p2mr...) {
		files = append(files, o.Path)
	}
	host, port := splitAddr(g.Addr)
	if res := runTool(60*time.Second, storescu, append([]string{"-aet", "MODALITY2", "-aec", "PROJ2", host, port}, files...)...); res.Err != nil || res.Code != 0 {
		t.Fatalf("storescu to PROJ2: %v (exit %d)\n%s", res.Err, res.Code, res.Out)
	}
	storeAllAs(t, g.Addr, "MODALITY3", "KP-PROJECT7", kp)
	storeAllAs(t, g.Addr, "MODALITY3", "DICOMGW", gwMR)
	if st := storeAs(t, g.Addr, "MODALITY3", "DICOMGW", gwOT); st[0] != dimse.StatusNotAuthorized {
		t.Errorf("an object no route matches: status %v, want 0124", st[0])
	}
	_, err := dialErr(g.Addr, "MODALITY3", "PROJ9", storeContext(sopSecondaryCapture, tsExplicitLE))
	wantReject(t, err, pdu.RejectPermanent, pdu.RejectSourceUser, pdu.RejectCalledAENotRecognized)

	c := waitDrained(t, g, 90*time.Second)
	if c.Dead != 0 {
		t.Fatalf("dead letters: %v", c)
	}
	checkHas(t, "Orthanc A", orthancDataSets(t, a), append(append(append([]testObject{}, p1ot...), p1mr...), kp...))
	checkHas(t, "Orthanc B", orthancDataSets(t, b), append(append([]testObject{}, p2ot...), p2mr...))
	checkHas(t, "storescp", storescpDataSets(t, scp.Dir), append(append([]testObject{}, p2ot...), p2mr...))
	checkHas(t, "the MR archive", archiveDataSets(t, archive), append(append(append([]testObject{}, p1mr...), p2mr...), gwMR...))

	// The ledger says where each went, after the files are gone.
	recs := traceJSON(t, g.SpoolDir, "--study", p2mr[0].StudyInstanceUID)
	if len(recs) != len(p2mr) {
		t.Fatalf("trace of a PROJ2 MR study: %d objects, want %d", len(recs), len(p2mr))
	}
	for _, r := range recs {
		if r.CalledAE != "PROJ2" || r.CallingAE != "MODALITY2" || r.Peer != "127.0.0.1" || r.LeftSpool.IsZero() {
			t.Errorf("trace: %+v", r)
		}
		got := map[string]string{}
		for _, d := range r.Destinations {
			got[d.Name] = d.State
			if d.State == "delivered" && d.DeliveredAt.Before(r.Received) {
				t.Errorf("trace: %s delivered before it was received", d.Name)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(map[string]string{"b": "delivered", "pacs": "delivered", "mr": "delivered"}) {
			t.Errorf("trace: destinations %v", got)
		}
	}
	m, err := g.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	for dest, n := range map[string]int{"a": 7, "b": 5, "pacs": 5, "mr": 5} {
		if got := m.Get("dicomgw_forward_instances_total", `destination="`+dest+`"`, `outcome="delivered"`); got != float64(n) {
			t.Errorf("delivered to %s: %v, want %d", dest, got, n)
		}
	}
	if got := m.Get("dicomgw_objects_unrouted_total"); got != 1 {
		t.Errorf("unrouted: %v, want 1", got)
	}
}

// tracedRecord is one line of `dicomgw spool trace --json`.
type tracedRecord struct {
	ID           string    `json:"id"`
	Received     time.Time `json:"received"`
	CallingAE    string    `json:"calling_ae"`
	CalledAE     string    `json:"called_ae"`
	Peer         string    `json:"peer"`
	SOPInstance  string    `json:"sop_instance_uid"`
	Study        string    `json:"study_instance_uid"`
	LeftSpool    time.Time `json:"left_spool"`
	Destinations []struct {
		Name        string    `json:"name"`
		State       string    `json:"state"`
		DeliveredAt time.Time `json:"delivered_at"`
		DeadReason  string    `json:"dead_reason"`
		Attempts    int       `json:"attempts"`
		Copy        string    `json:"copy"`
	} `json:"destinations"`
}

func traceJSON(t testing.TB, spoolDir string, args ...string) []tracedRecord {
	t.Helper()
	out := dicomgwCmd(t, append([]string{"spool", "trace", "--json", "--spool-dir", spoolDir}, args...)...)
	var recs []tracedRecord
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var r tracedRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("spool trace --json printed %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

// countingSTOW is a STOW-RS fake that stores and counts, per SOP instance,
// the complete requests that carried it; down makes it answer 503.
type countingSTOW struct {
	fake *stowFake
	url  string
	mu   sync.Mutex
	down bool
}

func newCountingSTOW(t *testing.T) *countingSTOW {
	c := &countingSTOW{}
	fake, srv := newSTOWFake(t, func(int, []string) (int, string, map[string]uint16) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.down {
			return http.StatusServiceUnavailable, "", nil
		}
		return http.StatusOK, "", nil
	})
	c.fake, c.url = fake, srv.URL+"/dicom-web"
	return c
}

func (c *countingSTOW) setDown(down bool) {
	c.mu.Lock()
	c.down = down
	c.mu.Unlock()
}

// stored counts, per SOP instance, the 200 answers that stored it.
func (c *countingSTOW) stored() map[string]int {
	reqs, _ := c.fake.snapshot()
	out := map[string]int{}
	for _, r := range reqs {
		if r.status != http.StatusOK {
			continue
		}
		for _, s := range r.sops {
			out[s]++
		}
	}
	return out
}

// TestFanOutOneDestinationDown: with one of two destinations down, the
// other delivers at once, the files stay in the spool (one copy each)
// until both have them; SIGKILL meanwhile and a restart lose nothing and
// send nothing twice to the destination that confirmed it; when the
// second comes back it catches up, and only then do the files leave.
func TestFanOutOneDestinationDown(t *testing.T) {
	t.Parallel()
	up, down := newCountingSTOW(t), newCountingSTOW(t)
	down.setDown(true)
	spoolDir := t.TempDir()
	args := append([]string{
		"--destination", "up=" + up.url, "--destination", "down=" + down.url,
		"--route", "{} -> up,down",
	}, fastRetry...)
	g := startGateway(t, spoolDir, args...)
	objs := studyObjects(t, t.TempDir(), 12, 16<<10)
	storeAll(t, g.Addr, "FANOUT", objs)
	// Delivered, as the gateway records it: the ledger has it once the
	// "object delivered" line is logged.
	waitFor(t, 30*time.Second, "the destination that is up has every object", func() bool {
		n := 0
		for _, r := range g.LogRecords("object delivered") {
			if r["destination"] == "up" {
				n++
			}
		}
		return n == len(objs)
	})
	if c := countSpool(t, spoolDir); c.Queued != len(objs) {
		t.Errorf("with one destination still to deliver: %v; want all %d objects queued once", c, len(objs))
	}
	// A crash while the second destination is down.
	g.Kill()
	<-g.Exited()
	g = startGateway(t, spoolDir, append(args, "--listen", g.Addr)...)
	time.Sleep(2 * time.Second) // the restarted gateway retries "down" and does not resend to "up"
	down.setDown(false)
	c := waitDrained(t, g, 60*time.Second)
	if c.Dead != 0 {
		t.Errorf("dead letters: %v", c)
	}
	for _, dst := range []*countingSTOW{up, down} {
		got := dst.stored()
		for _, o := range objs {
			if got[o.SOPInstanceUID] != 1 {
				t.Errorf("%s stored %d times at %s, want once", o.SOPInstanceUID, got[o.SOPInstanceUID], dst.url)
			}
		}
		_, data := dst.fake.snapshot()
		for _, o := range objs {
			if !bytes.Equal(data[o.SOPInstanceUID], o.DataSet) {
				t.Errorf("%s at %s: data set differs", o.SOPInstanceUID, dst.url)
			}
		}
	}
	recs := traceJSON(t, spoolDir, "--study", objs[0].StudyInstanceUID)
	if len(recs) != len(objs) {
		t.Fatalf("trace: %d objects, want %d", len(recs), len(objs))
	}
	for _, r := range recs {
		for _, d := range r.Destinations {
			if d.State != "delivered" || d.Name == "down" && d.Attempts == 0 && d.DeliveredAt.IsZero() {
				t.Errorf("trace of %s: %+v", r.ID, d)
			}
		}
	}
}

// TestSameSOPInstanceTwoSeries: two different objects with one SOP
// Instance UID, in two series: both are kept (two spool objects) and both
// forwarded, to a STOW-RS endpoint and to the archive.
func TestSameSOPInstanceTwoSeries(t *testing.T) {
	t.Parallel()
	stow := newCountingSTOW(t)
	archive := t.TempDir()
	g := startGateway(t, t.TempDir(), append([]string{
		"--destination", "web=" + stow.url, "--destination", "files=file://" + archive, "--route", "{} -> web,files",
	}, fastRetry...)...)
	objs := modalityObjects(t, t.TempDir(), "OT", 2, 2<<10)
	sop := objs[0].SOPInstanceUID
	var second harness.Elements
	second.Str(0x0008, 0x0016, "UI", sopSecondaryCapture)
	second.Str(0x0008, 0x0018, "UI", sop)
	second.Str(0x0008, 0x0060, "CS", "OT")
	second.Str(0x0020, 0x000D, "UI", objs[0].StudyInstanceUID)
	second.Str(0x0020, 0x000E, "UI", harness.NewUID()) // another series
	twins := []testObject{objs[0], {SOPInstanceUID: sop, StudyInstanceUID: objs[0].StudyInstanceUID, DataSet: second}}
	storeAll(t, g.Addr, "TWINS", twins)
	c := waitDrained(t, g, 30*time.Second)
	if c.Dead != 0 {
		t.Fatalf("spool %v", c)
	}
	if n := stow.stored()[sop]; n != 2 {
		t.Errorf("the endpoint was sent the SOP instance %d times, want 2 (both objects)", n)
	}
	var files []string
	filepath.Walk(archive, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 2 {
		t.Errorf("archive holds %v, want both objects", files)
	}
	if recs := traceJSON(t, g.SpoolDir, "--sop", sop); len(recs) != 2 || recs[0].ID == recs[1].ID {
		t.Errorf("trace: %+v, want two objects", recs)
	}
}

// TestRoutesReloadedOnSIGHUP: SIGHUP applies new routes and destinations to
// objects committed from then on; objects committed before keep the
// destinations they were routed to (here, one that was down), and a called
// AE title a new route selects is answered to at once.
func TestRoutesReloadedOnSIGHUP(t *testing.T) {
	t.Parallel()
	a, b := newCountingSTOW(t), newCountingSTOW(t)
	a.setDown(true)
	flags := filepath.Join(t.TempDir(), "routes.flags")
	write := func(lines ...string) {
		if err := os.WriteFile(flags, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("--destination=a="+a.url, `--route={called_ae="PROJ1"} -> a`, "--retry-min=200ms", "--retry-max=1s")
	g := startGateway(t, t.TempDir(), "--flagfile", flags)
	before := modalityObjects(t, t.TempDir(), "CT", 3, 2<<10)
	storeAllAs(t, g.Addr, "RELOADSCU", "PROJ1", before)
	if _, err := dialErr(g.Addr, "RELOADSCU", "PROJ2", storeContext(sopSecondaryCapture, tsExplicitLE)); err == nil {
		t.Fatal("PROJ2 accepted before any route selects it")
	}

	write("--destination=a="+a.url, "--destination=b="+b.url, `--route={called_ae=~"PROJ[12]"} -> b`, "--retry-min=200ms", "--retry-max=1s")
	g.Signal(syscall.SIGHUP)
	if _, err := g.WaitLog("config reloaded", 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	after := modalityObjects(t, t.TempDir(), "CT", 2, 2<<10)
	storeAllAs(t, g.Addr, "RELOADSCU", "PROJ2", after)
	a.setDown(false)
	c := waitDrained(t, g, 60*time.Second)
	if c.Dead != 0 {
		t.Fatalf("spool %v", c)
	}
	gotA, gotB := a.stored(), b.stored()
	for _, o := range before {
		if gotA[o.SOPInstanceUID] != 1 || gotB[o.SOPInstanceUID] != 0 {
			t.Errorf("committed before the reload: %d at a, %d at b; want 1 and 0", gotA[o.SOPInstanceUID], gotB[o.SOPInstanceUID])
		}
	}
	for _, o := range after {
		if gotA[o.SOPInstanceUID] != 0 || gotB[o.SOPInstanceUID] != 1 {
			t.Errorf("committed after the reload: %d at a, %d at b; want 0 and 1", gotA[o.SOPInstanceUID], gotB[o.SOPInstanceUID])
		}
	}
}

// TestDeadLetterPerDestination: a destination that refuses an object
// (FailureReason C000) dead-letters it for itself only: the other
// destination delivers, the file moves to dead/ with a reason naming the
// destination, and `spool trace` says so, also after a restart and after
// the file is gone. `spool retry --destination` sends it again there only,
// and once that destination takes it, the file leaves the spool.
func TestDeadLetterPerDestination(t *testing.T) {
	t.Parallel()
	good := newCountingSTOW(t)
	var mu sync.Mutex
	refuse := true
	picky, pickySrv := newSTOWFake(t, func(_ int, sops []string) (int, string, map[string]uint16) {
		mu.Lock()
		defer mu.Unlock()
		if refuse {
			failed := map[string]uint16{}
			for _, s := range sops {
				failed[s] = 0xC000
			}
			return http.StatusOK, "", failed
		}
		return http.StatusOK, "", nil
	})
	spoolDir := t.TempDir()
	args := append([]string{"--destination", "good=" + good.url, "--destination", "picky=" + pickySrv.URL + "/dicom-web", "--route", "{} -> good,picky"}, fastRetry...)
	g := startGateway(t, spoolDir, args...)
	objs := modalityObjects(t, t.TempDir(), "OT", 2, 2<<10)
	storeAll(t, g.Addr, "DEADSCU", objs)
	c := waitDrained(t, g, 30*time.Second)
	if c.Dead != 2 || len(good.stored()) != 2 {
		t.Fatalf("spool %v, good stored %d; want both delivered to good and dead for picky", c, len(good.stored()))
	}
	for id := range stateObjects(t, spoolDir, "dead") {
		if r := deadReason(t, spoolDir, id); !strings.Contains(r, "0xC000") {
			t.Errorf("dead letter %s: reason %q", id, r)
		}
		b, _ := os.ReadFile(filepath.Join(spoolDir, "dead", id+".reason"))
		if !bytes.Contains(b, []byte("dead_destinations: picky")) || !bytes.Contains(b, []byte("destination.picky: ")) {
			t.Errorf("reason file does not name the destination:\n%s", b)
		}
	}
	check := func(when string, wantPicky string) {
		t.Helper()
		recs := traceJSON(t, spoolDir, "--sop", objs[0].SOPInstanceUID)
		if len(recs) != 1 {
			t.Fatalf("%s: trace found %d objects", when, len(recs))
		}
		states := map[string]string{}
		for _, d := range recs[0].Destinations {
			states[d.Name] = d.State
			if d.Name == "picky" && d.State == "dead" && !strings.Contains(d.DeadReason, "0xC000") {
				t.Errorf("%s: dead reason %q", when, d.DeadReason)
			}
		}
		if states["good"] != "delivered" || states["picky"] != wantPicky {
			t.Errorf("%s: trace %v, want good delivered and picky %s", when, states, wantPicky)
		}
	}
	check("dead-lettered", "dead")
	// A restart: the ledger still answers.
	if err := g.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	_ = startGateway(t, spoolDir, args...)
	check("after a restart", "dead")
	if rows := spoolLs(t, spoolDir, "--state", "dead", "--destination", "picky"); len(rows) != 2 {
		t.Errorf("spool ls --destination picky: %d rows", len(rows))
	}
	// Retried there only, once it takes them.
	mu.Lock()
	refuse = false
	mu.Unlock()
	out := dicomgwCmd(t, "spool", "retry", "--spool-dir", spoolDir, "--destination", "picky", "--all")
	if !strings.Contains(out, "re-queued 2 dead letter(s)") {
		t.Fatalf("retry: %s", out)
	}
	waitFor(t, 60*time.Second, "the retried objects delivered to picky (rescan within 30 s)", func() bool {
		c := countSpool(t, spoolDir)
		return c.Queued == 0 && c.Dead == 0
	})
	check("retried and delivered", "delivered")
	if n := good.stored()[objs[0].SOPInstanceUID]; n != 1 {
		t.Errorf("good got the object %d times: the retry went to picky only? want 1", n)
	}
	_, stored := picky.snapshot()
	if len(stored) != 2 {
		t.Errorf("picky stored %d objects after the retry, want 2", len(stored))
	}
}

// TestCStoreDestinationToOrthanc: objects sent to the gateway in
// compressed transfer syntaxes (storescu, each in its own syntax) reach
// Orthanc's DICOM port through a dicom:// destination in that syntax,
// with the sender's calling AE when calling-ae=original.
func TestCStoreDestinationToOrthanc(t *testing.T) {
	t.Parallel()
	o := startOrthanc(t, map[string]any{"DicomScpTimeout": 2})
	g := startGateway(t, t.TempDir(), append([]string{
		"--destination", "pacs=dicom://" + o.AETitle + "@" + o.DICOMAddr() + " calling-ae=original",
		"--route", "{} -> pacs", "--keep-delivered", "1h",
	}, fastRetry...)...)
	storescu := needTool(t, "storescu")
	host, port := splitAddr(g.Addr)
	var sent []harness.CorpusFile
	for _, name := range []string{"sc-rgb-jpeg-baseline.dcm", "mr-rle.dcm", "ct-jpeg-ls-fragmented-with-bot.dcm", "us-jpeg-lossless-sv1.dcm"} {
		cf := corpusFile(t, name)
		args := []string{"-aet", "MODALITYX", "-aec", "DICOMGW", "-R"}
		if sw, ok := storescuSwitch[cf.TransferSyntaxUID]; ok {
			args = append(args, sw)
		} else {
			args = append(args, "-xf", writeProfile(t, t.TempDir(), []profileContext{{cf.SOPClassUID, []string{cf.TransferSyntaxUID}}}), "P")
		}
		if res := runTool(60*time.Second, storescu, append(args, host, port, cf.Path)...); res.Err != nil || res.Code != 0 {
			t.Fatalf("storescu %s: %v (exit %d)\n%s", name, res.Err, res.Code, res.Out)
		}
		sent = append(sent, cf)
	}
	c := waitDrained(t, g, 60*time.Second)
	if c.Dead != 0 {
		t.Fatalf("spool %v", c)
	}
	// What the gateway received (storescu may re-encode a data set as it
	// sends it), kept after delivery.
	received := map[string][]byte{}
	for _, obj := range stateObjects(t, g.SpoolDir, "delivered") {
		received[obj.Meta.SOPInstanceUID] = obj.DataSet
	}
	for _, cf := range sent {
		file, err := o.InstanceFile(cf.SOPInstanceUID)
		if err != nil {
			t.Errorf("%s: not in Orthanc: %v", cf.Name, err)
			continue
		}
		fm, ds, err := harness.ParsePart10(file)
		if err != nil {
			t.Fatal(err)
		}
		if fm.TransferSyntaxUID != cf.TransferSyntaxUID {
			t.Errorf("%s: stored in %s, sent in %s: transcoded", cf.Name, fm.TransferSyntaxUID, cf.TransferSyntaxUID)
		}
		if !bytes.Equal(ds, received[cf.SOPInstanceUID]) {
			t.Errorf("%s: Orthanc's data set differs from the one the gateway received", cf.Name)
		}
		var meta struct {
			RemoteAET string `json:"RemoteAET"`
		}
		id, _ := o.InstanceID(cf.SOPInstanceUID)
		if err := o.GetJSON("/instances/"+id+"/metadata?expand", &meta); err != nil {
			t.Errorf("%s: Orthanc's metadata: %v", cf.Name, err)
		} else if meta.RemoteAET != "MODALITYX" {
			t.Errorf("%s: Orthanc saw calling AE %q, want the sender's MODALITYX", cf.Name, meta.RemoteAET)
		}
	}
}
