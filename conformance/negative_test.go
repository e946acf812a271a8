package conformance

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// wantReject checks that err is an A-ASSOCIATE-RJ with exactly these
// result, source and reason (PS3.8 9.3.4, Table 9-21).
func wantReject(t *testing.T, err error, result pdu.RejectResult, source pdu.RejectSource, reason pdu.RejectReason) {
	t.Helper()
	var rj *dimse.RejectedError
	if !errors.As(err, &rj) {
		t.Fatalf("got %v, want A-ASSOCIATE-RJ %d/%d/%d", err, result, source, reason)
	}
	if rj.Result != result || rj.Source != source || rj.Reason != reason {
		t.Errorf("A-ASSOCIATE-RJ result/source/reason = %d/%d/%d, want %d/%d/%d",
			rj.Result, rj.Source, rj.Reason, result, source, reason)
	}
}

// echoWorks opens a new association, echoes and releases.
func echoWorks(t *testing.T, g *harness.Gateway, callingAE string) {
	t.Helper()
	c, err := dialErr(g.Addr, callingAE, calledAE, verificationContext)
	if err != nil {
		t.Fatalf("new association: %v", err)
	}
	defer c.Close()
	if st, err := c.Echo(); err != nil || st != dimse.StatusSuccess {
		t.Fatalf("C-ECHO: %v %v", st, err)
	}
	if err := c.Release(); err != nil {
		t.Fatalf("release: %v", err)
	}
}

// TestWrongCalledAE: a called AE title the gateway does not answer to is
// rejected permanent, by the service user, reason 7 "called AE title not
// recognized" (PS3.8 9.3.4).
func TestWrongCalledAE(t *testing.T) {
	t.Parallel()
	echoscu := needTool(t, "echoscu")
	g := startGateway(t, t.TempDir())
	_, err := dialErr(g.Addr, "SOMESCU", "WRONG", verificationContext)
	wantReject(t, err, pdu.RejectPermanent, pdu.RejectSourceUser, pdu.RejectCalledAENotRecognized)

	r := runTool(30*time.Second, echoscu, "-aet", "SOMESCU", "-aec", "WRONG", g.Host(), g.Port())
	if r.Code == 0 || !strings.Contains(r.Out, "Called AE Title Not Recognized") {
		t.Errorf("echoscu -aec WRONG should fail with called AE title not recognized: %v", r)
	}
	echoWorks(t, g, "SOMESCU")
}

// TestMaxAssociations: above --max-associations, requests are rejected
// transient, by the service provider (presentation), reason 2 "local limit
// exceeded" (PS3.8 9.3.4); a released association frees its slot.
func TestMaxAssociations(t *testing.T) {
	t.Parallel()
	echoscu := needTool(t, "echoscu")
	g := startGateway(t, t.TempDir(), "--max-associations", "2")
	held := []*dimse.Client{
		dial(t, g.Addr, "HOLD1", verificationContext),
		dial(t, g.Addr, "HOLD2", verificationContext),
	}
	for i, c := range held {
		if st, err := c.Echo(); err != nil || st != 0 {
			t.Fatalf("held association %d: C-ECHO %v %v", i+1, st, err)
		}
	}
	_, err := dialErr(g.Addr, "THIRD", calledAE, verificationContext)
	wantReject(t, err, pdu.RejectTransient, pdu.RejectSourceProviderPresent, pdu.RejectLocalLimitExceeded)
	if r := runTool(30*time.Second, echoscu, "-aet", "THIRDECHOSCU", "-aec", calledAE, g.Host(), g.Port()); r.Code == 0 {
		t.Errorf("echoscu got through with 2 of 2 associations held: %v", r)
	}

	if err := held[0].Release(); err != nil {
		t.Fatal(err)
	}
	// The slot is freed when the association is torn down, which the
	// "association ended" line reports.
	if _, err := g.WaitLog("association ended", 5*time.Second, func(m map[string]any) bool {
		return m["calling_ae"] == "HOLD1" && m["outcome"] == "released"
	}); err != nil {
		t.Fatal(err)
	}
	echoWorks(t, g, "FOURTH")
	if st, err := held[1].Echo(); err != nil || st != 0 {
		t.Errorf("the other held association stopped working: %v %v", st, err)
	}
	held[1].Release()
}

// clientHello returns the first TLS record a Go TLS client sends.
func clientHello(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: "dicomgw.test", InsecureSkipVerify: true}).Handshake()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// TestGarbageOnThePort: bytes that are not a DICOM association request, or
// one whose declared length is beyond any bound, must get an A-ABORT or a
// closed connection at once (PS3.8 9.2, Sta2: AA-1 for an unrecognized or
// invalid PDU; our limits on A-ASSOCIATE length), well before ARTIM would
// expire, without allocating what the length claims, and the next
// association must work.
func TestGarbageOnThePort(t *testing.T) {
	t.Parallel()
	const artim = 5 * time.Second
	g := startGateway(t, t.TempDir(), "--artim-timeout", artim.String())

	huge := func(typ byte, n uint32, extra int) []byte {
		b := []byte{typ, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[2:], n)
		return append(b, bytes.Repeat([]byte{0x5A}, extra)...)
	}
	// The start of a real A-ASSOCIATE-RQ, with a length of 1 MiB + 1 (our
	// bound is 1 MiB) in its header.
	rq, err := pdu.Encode(&pdu.AssociateRQ{ProtocolVersion: 1, CalledAE: pdu.MakeAE(calledAE), CallingAE: pdu.MakeAE("BIG"),
		ApplicationContext: "1.2.840.10008.3.1.1.1"})
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint32(rq[2:], 1<<20+1)

	cases := []struct {
		name string
		data []byte
	}{
		{"HTTP request", []byte("GET / HTTP/1.1\r\nHost: dicomgw\r\nUser-Agent: conformance\r\n\r\n")},
		{"TLS ClientHello", clientHello(t)},
		{"A-ASSOCIATE-RQ header of length 0xFFFFFFFF", huge(byte(pdu.TypeAssociateRQ), 0xFFFFFFFF, 16)},
		{"P-DATA-TF header of length 0xFFFFFFFF", huge(byte(pdu.TypePDataTF), 0xFFFFFFFF, 16)},
		{"A-ASSOCIATE-RQ of 1 MiB + 1", rq},
	}
	rss0, err := g.RSS()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Several times, so that an allocation per connection would
			// show in RSS.
			for i := 0; i < 10; i++ {
				conn, err := net.Dial("tcp", g.Addr)
				if err != nil {
					t.Fatal(err)
				}
				start := time.Now()
				conn.Write(tc.data)
				// Well under ARTIM: a gateway that just waits for ARTIM
				// fails here.
				conn.SetReadDeadline(time.Now().Add(artim / 2))
				p, err := pdu.NewReader(conn, pdu.Limits{}, nil).ReadPDU()
				elapsed := time.Since(start)
				conn.Close()
				var ne net.Error
				switch {
				case err == nil:
					if _, ok := p.(*pdu.Abort); !ok {
						t.Fatalf("got %v, want A-ABORT or close", p.Type())
					}
				case errors.As(err, &ne) && ne.Timeout():
					t.Fatalf("neither A-ABORT nor close within %v (ARTIM %v)", elapsed.Round(time.Millisecond), artim)
				case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
				default:
					t.Fatalf("reading the answer: %v", err)
				}
				if i == 0 {
					what := "connection closed"
					if ab, ok := p.(*pdu.Abort); ok {
						what = fmt.Sprintf("A-ABORT source %d reason %d", ab.Source, ab.Reason)
					}
					t.Logf("%s after %v", what, elapsed.Round(time.Microsecond))
				}
			}
			echoWorks(t, g, "AFTERGARBAGE")
		})
	}
	rss1, err := g.RSS()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dicomgw VmRSS %d kB before, %d kB after %d garbage connections", rss0>>10, rss1>>10, 10*len(cases))
	if rss1-rss0 > 8<<20 {
		t.Errorf("VmRSS grew by %d kB, more than 8 MB", (rss1-rss0)>>10)
	}
}

// TestUIDMismatch: a data set whose SOP Instance or Class UID differs from
// the command's gets A900 (PS3.4 B.2.3) and is not spooled; the
// association goes on.
func TestUIDMismatch(t *testing.T) {
	t.Parallel()
	g := startGateway(t, t.TempDir())
	mr := corpusFile(t, "mr-explicit-le.dcm")
	ct := corpusFile(t, "ct-explicit-le.dcm")
	c := dial(t, g.Addr, "MISMATCH", storeContext(mr.SOPClassUID, tsExplicitLE), verificationContext)

	rsp, err := c.Store(mr.SOPClassUID, harness.NewUID(), tsExplicitLE, bytes.NewReader(dataSetOf(t, mr)))
	if err != nil {
		t.Fatal(err)
	}
	if rsp.Status != dimse.StatusDataSetDoesNotMatchClass {
		t.Errorf("other SOP Instance UID in the command: status %v (%q), want A900", rsp.Status, rsp.ErrorComment)
	}
	// A CT data set announced as MR, with the CT's own instance UID.
	rsp, err = c.Store(mr.SOPClassUID, ct.SOPInstanceUID, tsExplicitLE, bytes.NewReader(dataSetOf(t, ct)))
	if err != nil {
		t.Fatal(err)
	}
	if rsp.Status != dimse.StatusDataSetDoesNotMatchClass {
		t.Errorf("CT data set sent as MR: status %v (%q), want A900", rsp.Status, rsp.ErrorComment)
	}
	noPartials(t, g.SpoolDir)
	if objs := newObjects(t, g.SpoolDir, nil); len(objs) != 0 {
		t.Errorf("mismatched objects were spooled: %v", objs)
	}
	// The association is still good for a correct object.
	rsp, err = c.Store(mr.SOPClassUID, mr.SOPInstanceUID, tsExplicitLE, bytes.NewReader(dataSetOf(t, mr)))
	if err != nil || rsp.Status != dimse.StatusSuccess {
		t.Errorf("matching C-STORE after the mismatches: %v %v", rsp, err)
	}
	if err := c.Release(); err != nil {
		t.Error(err)
	}
	if n := len(newObjects(t, g.SpoolDir, nil)); n != 1 {
		t.Errorf("%d objects spooled, want 1", n)
	}
}

// mountTmpfs mounts a tmpfs of size (mount(8) syntax, "8m") on a new
// directory and unmounts it when the test ends (after the gateway's
// cleanup, which is registered later). Mounting needs root: CI runs these
// tests as root; elsewhere the test is skipped.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		if os.Geteuid() != 0 {
			t.Skipf("mounting a tmpfs needs root (CI runs these tests as root): %v", err)
		}
		t.Fatalf("mount -t tmpfs -o size=%s tmpfs %s as root: %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// writeFiller fills n bytes of the file system at path with a real file
// (written, not a hole: tmpfs counts only the pages written).
func writeFiller(t *testing.T, path string, n int) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xF1}, n), 0o644); err != nil {
		t.Fatalf("filler: %v", err)
	}
}

// heldSTOW is a STOW-RS endpoint that answers 503 until released, then
// stores everything: the objects stay queued, where the test can look at
// them, until it lets them go.
func heldSTOW(t *testing.T) (fake *stowFake, url string, release func()) {
	var held atomic.Bool
	held.Store(true)
	fake, srv := newSTOWFake(t, func(n int, sops []string) (int, string, map[string]uint16) {
		if held.Load() {
			return http.StatusServiceUnavailable, "", nil
		}
		return http.StatusOK, "", nil
	})
	return fake, srv.URL + "/dicom-web", func() { held.Store(false) }
}

// TestSpoolFull puts the spool on an 8 MiB tmpfs of which a filler file
// takes 4 MiB, and stores 1 MB objects until it is full: the object that
// does not fit gets A700 (PS3.4 B.2.3, out of resources) with its partial
// file removed, the association goes on, and the objects stored before
// are intact. Then the filler is deleted: with nobody restarting or
// telling it anything, the gateway takes objects again on a new
// association, and every object it acknowledged, before and after, is
// delivered intact (to a STOW-RS endpoint that holds deliveries back with
// 503 until the test has looked at the queue).
func TestSpoolFull(t *testing.T) {
	t.Parallel()
	dcmdump := needTool(t, "dcmdump")
	dir := mountTmpfs(t, "8m")
	filler := filepath.Join(dir, "filler")
	writeFiller(t, filler, 4<<20)
	fake, stowURL, releaseSTOW := heldSTOW(t)
	g := startGateway(t, dir, append([]string{"--stow-url", stowURL}, fastRetry...)...)

	big := corpusFile(t, "ct-enhanced-multiframe.dcm") // about 1 MB
	small := corpusFile(t, "mr-explicit-le.dcm")       // about 10 kB
	bigData, smallData := dataSetOf(t, big), dataSetOf(t, small)
	c := dial(t, g.Addr, "FILLER",
		storeContext(big.SOPClassUID, big.TransferSyntaxUID),
		storeContext(small.SOPClassUID, small.TransferSyntaxUID),
		verificationContext)

	stored := 0
	full := false
	for i := 0; i < 10 && !full; i++ {
		rsp, err := c.Store(big.SOPClassUID, big.SOPInstanceUID, big.TransferSyntaxUID, bytes.NewReader(bigData))
		if err != nil {
			t.Fatalf("C-STORE %d: %v", i+1, err)
		}
		switch rsp.Status {
		case dimse.StatusSuccess:
			stored++
		case dimse.StatusOutOfResources:
			full = true
			t.Logf("C-STORE %d: %v (%q)", i+1, rsp.Status, rsp.ErrorComment)
		default:
			t.Fatalf("C-STORE %d: status %v (%q), want 0000 or A700", i+1, rsp.Status, rsp.ErrorComment)
		}
	}
	if !full || stored == 0 {
		t.Fatalf("%d objects stored, full=%v: 4 MiB left for the spool should take 1 to 3 objects of 1 MB, then refuse", stored, full)
	}
	noPartials(t, dir)

	// Same association: still answered.
	if st, err := c.Echo(); err != nil || st != dimse.StatusSuccess {
		t.Errorf("C-ECHO after A700: %v %v", st, err)
	}
	// The removed partial freed its space: a small object fits.
	rsp, err := c.Store(small.SOPClassUID, small.SOPInstanceUID, small.TransferSyntaxUID, bytes.NewReader(smallData))
	if err != nil || rsp.Status != dimse.StatusSuccess {
		t.Errorf("small C-STORE after A700: %v %v", rsp, err)
	}
	if err := c.Release(); err != nil {
		t.Error(err)
	}
	// checkQueue checks that the queue holds what was acknowledged, each
	// object intact.
	checkQueue := func(when string) {
		t.Helper()
		objs := newObjects(t, dir, nil)
		if len(objs) != stored+1 {
			t.Fatalf("%s: queue has %d objects, want %d", when, len(objs), stored+1)
		}
		nBig := 0
		for _, p := range objs {
			o := readSpooled(t, p)
			want := smallData
			if o.Meta.SOPInstanceUID == big.SOPInstanceUID {
				want = bigData
				nBig++
			}
			if !bytes.Equal(o.DataSet, want) {
				t.Errorf("%s: %s: data set damaged: %s", when, filepath.Base(p), firstDiff(o.DataSet, want))
			}
			checkDcmdump(t, dcmdump, p)
		}
		if nBig != stored {
			t.Errorf("%s: %d of the big objects in the queue, %d stored", when, nBig, stored)
		}
	}
	checkQueue("full")
	if _, err := g.WaitLog("C-STORE failed", time.Second, func(m map[string]any) bool {
		return m["status"] == dimse.StatusOutOfResources.String() && m["sop_instance"] == big.SOPInstanceUID
	}); err != nil {
		t.Error(err)
	}

	// Still full: a new association's object does not fit either, and
	// leaves nothing behind.
	c2 := dial(t, g.Addr, "STILLFULL", storeContext(big.SOPClassUID, big.TransferSyntaxUID))
	if rsp, err := c2.Store(big.SOPClassUID, big.SOPInstanceUID, big.TransferSyntaxUID, bytes.NewReader(bigData)); err != nil || rsp.Status != dimse.StatusOutOfResources {
		t.Errorf("C-STORE on a new association before space is freed: %v %v, want A700", rsp, err)
	}
	c2.Release()
	noPartials(t, dir)

	// Free the space. No restart, no signal: the next association works.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	after := studyObjects(t, t.TempDir(), 3, 1<<20)
	c3 := dial(t, g.Addr, "AFTERFREE", storeContext(sopSecondaryCapture, tsExplicitLE), verificationContext)
	for i, o := range after {
		rsp, err := c3.Store(sopSecondaryCapture, o.SOPInstanceUID, tsExplicitLE, bytes.NewReader(o.DataSet))
		if err != nil || rsp.Status != dimse.StatusSuccess {
			t.Fatalf("C-STORE %d of 1 MB after the filler was deleted: %v %v, want 0000", i+1, rsp, err)
		}
	}
	if err := c3.Release(); err != nil {
		t.Error(err)
	}
	stored += len(after) // checkQueue counts the new ones as "small": check the old ones by hand
	objs := newObjects(t, dir, nil)
	if len(objs) != stored+1 {
		t.Fatalf("queue has %d objects after the filler was deleted, want %d", len(objs), stored+1)
	}
	for _, p := range objs {
		o := readSpooled(t, p)
		var want []byte
		switch o.Meta.SOPInstanceUID {
		case big.SOPInstanceUID:
			want = bigData
		case small.SOPInstanceUID:
			want = smallData
		default:
			for _, a := range after {
				if a.SOPInstanceUID == o.Meta.SOPInstanceUID {
					want = a.DataSet
				}
			}
		}
		if !bytes.Equal(o.DataSet, want) {
			t.Errorf("%s (%s): data set damaged: %s", filepath.Base(p), o.Meta.SOPInstanceUID, firstDiff(o.DataSet, want))
		}
	}
	noPartials(t, dir)

	// Delivery: everything acknowledged goes out intact, and leaves the
	// spool.
	releaseSTOW()
	counts := waitDrained(t, g, 60*time.Second)
	if counts.Dead != 0 {
		t.Errorf("dead letters: %v", counts)
	}
	reqs, got := fake.snapshot()
	delivered := 0
	for _, r := range reqs {
		if r.status == http.StatusOK {
			delivered += len(r.sops)
		}
	}
	if delivered != stored+1 {
		t.Errorf("%d instances delivered, %d acknowledged", delivered, stored+1)
	}
	want := map[string][]byte{big.SOPInstanceUID: bigData, small.SOPInstanceUID: smallData}
	for _, a := range after {
		want[a.SOPInstanceUID] = a.DataSet
	}
	for u, ds := range want {
		if !bytes.Equal(got[u], ds) {
			t.Errorf("%s delivered with a different data set: %s", u, firstDiff(got[u], ds))
		}
	}
	t.Logf("%d objects acknowledged before the spool filled, A700 once full, %d more after the filler was deleted; all %d delivered after %d STOW-RS requests",
		stored-len(after)+1, len(after), delivered, len(reqs))
}

// TestSpoolMinFreeResumes: with --spool-min-free, a spool whose file
// system runs short of free space stops taking objects before it hits
// ENOSPC: a C-STORE on an open association gets A700, a new association
// A-ASSOCIATE-RJ 2/3/1 (transient, temporary congestion: PS3.8 9.3.4,
// come back later), /readyz says why. When space is freed (the filler
// file deleted), the gateway takes objects again by itself, at the next
// association, and the refused object goes through when sent again.
func TestSpoolMinFreeResumes(t *testing.T) {
	t.Parallel()
	dir := mountTmpfs(t, "8m")
	filler := filepath.Join(dir, "filler")
	writeFiller(t, filler, 5<<20) // about 3 MiB left
	fake, stowURL, releaseSTOW := heldSTOW(t)
	g := startGateway(t, dir, append([]string{"--stow-url", stowURL, "--spool-min-free", "2MiB"}, fastRetry...)...)
	objs := studyObjects(t, t.TempDir(), 2, 1536<<10)

	c := dial(t, g.Addr, "MINFREE", storeContext(sopSecondaryCapture, tsExplicitLE), verificationContext)
	if rsp, err := c.Store(sopSecondaryCapture, objs[0].SOPInstanceUID, tsExplicitLE, bytes.NewReader(objs[0].DataSet)); err != nil || rsp.Status != dimse.StatusSuccess {
		t.Fatalf("first C-STORE with 3 MiB free: %v %v, want 0000", rsp, err)
	}
	// Now under 2 MiB free: no new object.
	rsp, err := c.Store(sopSecondaryCapture, objs[1].SOPInstanceUID, tsExplicitLE, bytes.NewReader(objs[1].DataSet))
	if err != nil || rsp.Status != dimse.StatusOutOfResources {
		t.Fatalf("C-STORE with under 2 MiB free: %v %v, want A700", rsp, err)
	}
	t.Logf("below --spool-min-free: %v (%q)", rsp.Status, rsp.ErrorComment)
	if st, err := c.Echo(); err != nil || st != dimse.StatusSuccess {
		t.Errorf("C-ECHO on the same association: %v %v", st, err)
	}
	c.Release()
	_, err = dialErr(g.Addr, "MINFREE2", calledAE, storeContext(sopSecondaryCapture, tsExplicitLE))
	wantReject(t, err, pdu.RejectTransient, pdu.RejectSourceProviderPresent, pdu.RejectTemporaryCongestion)
	if code, m := readyz(t, g); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d (%v) with the spool refusing objects, want 503", code, m)
	}
	noPartials(t, dir)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, g.Addr, "MINFREE3", storeContext(sopSecondaryCapture, tsExplicitLE))
	if rsp, err := c2.Store(sopSecondaryCapture, objs[1].SOPInstanceUID, tsExplicitLE, bytes.NewReader(objs[1].DataSet)); err != nil || rsp.Status != dimse.StatusSuccess {
		t.Fatalf("C-STORE again after the filler was deleted: %v %v, want 0000", rsp, err)
	}
	c2.Release()
	if code, m := readyz(t, g); code != http.StatusOK {
		t.Errorf("/readyz %d (%v) after space was freed and a store went through, want 200", code, m)
	}

	releaseSTOW()
	if counts := waitDrained(t, g, 60*time.Second); counts.Dead != 0 {
		t.Errorf("dead letters: %v", counts)
	}
	_, got := fake.snapshot()
	for _, o := range objs {
		if !bytes.Equal(got[o.SOPInstanceUID], o.DataSet) {
			t.Errorf("%s not delivered intact: %s", o.SOPInstanceUID, firstDiff(got[o.SOPInstanceUID], o.DataSet))
		}
	}
}
