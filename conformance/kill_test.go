package conformance

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// bigPixelData is the size of the Pixel Data of the generated large
// object: big enough that a sender is reliably still in the middle of it
// when it is killed.
const bigPixelData = 300 << 20

// bigDataSet returns the head of a Secondary Capture data set whose last
// element is an OW Pixel Data (7FE0,0010) of n bytes (PS3.5 7.1.2); the n
// value bytes are the caller's to supply.
func bigDataSet(inst string, n uint32) []byte {
	e := harness.Elements(smallDataSet(sopSecondaryCapture, inst))
	e.Header(0x7FE0, 0x0010, "OW", n)
	return e
}

// writeBigObject writes a Part 10 file with a bigPixelData-byte Pixel Data
// of zeros and returns its path and SOP Instance UID.
func writeBigObject(t *testing.T, dir string) (string, string) {
	t.Helper()
	inst := harness.NewUID()
	path := filepath.Join(dir, "big.dcm")
	writeObject(t, path, sopSecondaryCapture, inst, bigDataSet(inst, bigPixelData), bigPixelData)
	return path, inst
}

// waitPartial waits until an object being received in incoming/ has grown
// to at least n bytes: the sender is then mid-object.
func waitPartial(t *testing.T, spoolDir string, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		parts, _ := harness.PartialFiles(spoolDir)
		for _, p := range parts {
			if fi, err := os.Stat(p); err == nil && fi.Size() >= n {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no partial object of %d bytes in %s/incoming within %v (found %v)", n, spoolDir, timeout, parts)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// errSenderGaveUp is what the stalling reader returns when released.
var errSenderGaveUp = errors.New("sender gave up")

// stallingReader yields head then zeros, and after stallAt bytes blocks
// until release is closed, then fails: a requestor reading it is stuck
// mid data set for as long as the test wants, then gives up.
type stallingReader struct {
	head    []byte
	n       int64
	stallAt int64
	release chan struct{}
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if r.n >= r.stallAt {
		<-r.release
		return 0, errSenderGaveUp
	}
	p = p[:min(int64(len(p)), r.stallAt-r.n)]
	k := 0
	if r.n < int64(len(r.head)) {
		k = copy(p, r.head[r.n:])
	}
	clear(p[k:])
	r.n += int64(len(p))
	return len(p), nil
}

// stalledStore starts a C-STORE of a big object from our requestor as
// callingAE, reading a stallingReader, and returns once the gateway has 4
// MiB of it in incoming/. release makes the reader fail (the requestor
// gives up); done yields what Store returned.
func stalledStore(t *testing.T, g *harness.Gateway, callingAE string) (inst string, release func(), done <-chan error) {
	t.Helper()
	inst = harness.NewUID()
	rd := &stallingReader{head: bigDataSet(inst, bigPixelData), stallAt: 16 << 20, release: make(chan struct{})}
	c := dial(t, g.Addr, callingAE, storeContext(sopSecondaryCapture, tsExplicitLE))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Store(sopSecondaryCapture, inst, tsExplicitLE, rd)
		errc <- err
	}()
	waitPartial(t, g.SpoolDir, 4<<20, 30*time.Second)
	return inst, func() { close(rd.release) }, errc
}

// TestSenderDiesMidObject: an object whose sender goes away before its
// last fragment is never acknowledged, so it must leave nothing behind
// (DESIGN.md: only a committed object exists), and the gateway must go on
// serving.
func TestSenderDiesMidObject(t *testing.T) {
	t.Parallel()
	storescu := needTool(t, "storescu")
	echoscu := needTool(t, "echoscu")
	big, bigInst := writeBigObject(t, t.TempDir())

	// afterwards checks that nothing of the object is left and that the
	// gateway still serves a new association.
	afterwards := func(t *testing.T, g *harness.Gateway, callingAE, inst, wantOutcome string) {
		t.Helper()
		rec, err := g.WaitLog("association ended", 10*time.Second, func(m map[string]any) bool { return m["calling_ae"] == callingAE })
		if err != nil {
			t.Fatal(err)
		}
		if rec["outcome"] != wantOutcome {
			t.Errorf("association ended with outcome %v (%v), want %s", rec["outcome"], rec["detail"], wantOutcome)
		}
		if _, err := g.WaitLog("C-STORE abandoned", time.Second, func(m map[string]any) bool { return m["sop_instance"] == inst }); err != nil {
			t.Error(err)
		}
		noPartials(t, g.SpoolDir)
		if objs := newObjects(t, g.SpoolDir, nil); len(objs) != 0 {
			t.Errorf("queue has objects after an abandoned C-STORE: %v", objs)
		}
		if r := runTool(30*time.Second, echoscu, "-aec", calledAE, g.Host(), g.Port()); r.Code != 0 {
			t.Errorf("echoscu after the abandoned C-STORE: %v", r)
		}
	}

	t.Run("storescu killed", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, t.TempDir())
		cmd := exec.Command(storescu, "-aet", "KILLEDSCU", "-aec", calledAE, "-xe", "-R", g.Host(), g.Port(), big)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killed := false
		defer func() {
			if !killed {
				cmd.Process.Kill()
				cmd.Wait()
			}
		}()
		if _, err := g.WaitLog("association accepted", 30*time.Second, func(m map[string]any) bool { return m["calling_ae"] == "KILLEDSCU" }); err != nil {
			t.Fatal(err)
		}
		waitPartial(t, g.SpoolDir, 4<<20, 30*time.Second)
		cmd.Process.Kill() // SIGKILL: no A-ABORT, the kernel just closes the socket
		cmd.Wait()
		killed = true
		afterwards(t, g, "KILLEDSCU", bigInst, "connection-lost")
	})

	t.Run("requestor aborts", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, t.TempDir())
		inst, release, done := stalledStore(t, g, "ABORTSCU")
		// The reader fails: dimse.Client sends A-ABORT (PS3.8 7.3.1) and
		// closes.
		release()
		if err := <-done; !errors.Is(err, errSenderGaveUp) {
			t.Fatalf("Store returned %v, want the reader's error", err)
		}
		afterwards(t, g, "ABORTSCU", inst, "peer-aborted")
	})

	t.Run("gateway killed", func(t *testing.T) {
		t.Parallel()
		dcmdump := needTool(t, "dcmdump")
		spoolDir := t.TempDir()
		g, err := harness.Start(spoolDir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(g.Kill)

		// A committed object first: it must survive the crash.
		cf := corpusFile(t, "mr-explicit-le.dcm")
		data := dataSetOf(t, cf)
		c := dial(t, g.Addr, "BEFORECRASH", storeContext(cf.SOPClassUID, cf.TransferSyntaxUID))
		if rsp, err := c.Store(cf.SOPClassUID, cf.SOPInstanceUID, cf.TransferSyntaxUID, bytes.NewReader(data)); err != nil || rsp.Status != 0 {
			t.Fatalf("C-STORE before the crash: %v %v", rsp, err)
		}
		c.Release()

		_, release, done := stalledStore(t, g, "DURINGCRASH")
		g.Kill() // SIGKILL mid-object
		release()
		if err := <-done; err == nil {
			t.Error("Store succeeded although the gateway was killed")
		}
		if parts, _ := harness.PartialFiles(spoolDir); len(parts) != 1 {
			t.Fatalf("after the crash incoming/ has %v, want the one partial object", parts)
		}

		g2 := startGateway(t, spoolDir)
		rec, err := g2.WaitLog("spool opened", 5*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rec["partials_removed"] != float64(1) || rec["queued"] != float64(1) {
			t.Errorf("spool opened with partials_removed=%v queued=%v, want 1 and 1", rec["partials_removed"], rec["queued"])
		}
		noPartials(t, spoolDir)
		objs := newObjects(t, spoolDir, nil)
		if len(objs) != 1 {
			t.Fatalf("queue after restart: %v, want the one object committed before the crash", objs)
		}
		o := readSpooled(t, objs[0])
		checkMeta(t, o, cf.SOPClassUID, cf.SOPInstanceUID, cf.TransferSyntaxUID, "BEFORECRASH")
		if !bytes.Equal(o.DataSet, data) {
			t.Errorf("committed object changed across the crash: %s", firstDiff(o.DataSet, data))
		}
		checkDcmdump(t, dcmdump, o.Path)
		c3 := dial(t, g2.Addr, "AFTERCRASH", verificationContext)
		if st, err := c3.Echo(); err != nil || st != 0 {
			t.Errorf("C-ECHO after restart: %v %v", st, err)
		}
		c3.Release()
	})
}

var _ io.Reader = (*stallingReader)(nil)
