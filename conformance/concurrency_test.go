package conformance

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// TestConcurrentStorescu runs several storescu processes at once against
// one gateway, each on its own association sending ten corpus files. All
// must succeed and the queue must hold exactly one object per C-STORE, each
// carrying its own sender's AE title and the right data set.
func TestConcurrentStorescu(t *testing.T) {
	t.Parallel()
	storescu := needTool(t, "storescu")
	corpus := loadCorpus(t)
	const procs, perProc = 6, 10

	// The pool: files storescu can send whose SOP Instance UID is unique
	// in the corpus, so that the reference copies can be matched by UID.
	uidCount := map[string]int{}
	for _, cf := range corpus {
		uidCount[cf.SOPInstanceUID]++
	}
	var pool []harness.CorpusFile
	var ctxs []profileContext
	var classes []string
	seenCtx := map[string]bool{}
	for _, cf := range corpus {
		if !storescuCanSend(cf) || uidCount[cf.SOPInstanceUID] != 1 {
			continue
		}
		pool = append(pool, cf)
		classes = append(classes, cf.SOPClassUID)
		if k := cf.SOPClassUID + "|" + cf.TransferSyntaxUID; !seenCtx[k] {
			seenCtx[k] = true
			ctxs = append(ctxs, profileContext{cf.SOPClassUID, []string{cf.TransferSyntaxUID}})
		}
	}
	if len(pool) < 30 {
		t.Fatalf("only %d corpus files in the pool", len(pool))
	}
	// One profile proposing each (SOP class, transfer syntax) pair of the
	// pool as its own presentation context: every file goes in its own
	// syntax, whatever the mix in one storescu run.
	dir := t.TempDir()
	profile := writeProfile(t, dir, ctxs)

	// Reference: what dcmtk puts on the wire for each pool file, captured
	// by a bit-preserving storescp from one storescu run with the same
	// profile.
	ref := startStorescp(t, "STORESCP", "+B", "-xf", scpProfile(t, dir, classes), "P")
	args := []string{"-xf", profile, "P", "-aet", "REFERENCE", "-aec", "STORESCP", "127.0.0.1", fmt.Sprint(ref.Port)}
	for _, cf := range pool {
		args = append(args, cf.Path)
	}
	if r := runTool(2*time.Minute, storescu, args...); r.Code != 0 {
		t.Fatalf("sending the pool to storescp: %v\n%s", r, ref.Output())
	}
	type wire struct {
		ts string
		ds []byte
	}
	reference := map[string]wire{}
	files, _ := os.ReadDir(ref.Dir)
	for _, e := range files {
		p := filepath.Join(ref.Dir, e.Name())
		fm, err := harness.ReadFileMeta(p)
		if err != nil {
			t.Fatal(err)
		}
		ds, err := harness.DataSet(p)
		if err != nil {
			t.Fatal(err)
		}
		reference[fm.MediaStorageSOPInstanceUID] = wire{fm.TransferSyntaxUID, ds}
	}
	if len(reference) != len(pool) {
		t.Fatalf("storescp stored %d of the %d pool files", len(reference), len(pool))
	}

	g := startGateway(t, t.TempDir())
	want := map[string][]string{} // calling AE -> SOP instance UIDs sent
	byUID := map[string]harness.CorpusFile{}
	results := make([]harness.Result, procs)
	var wg sync.WaitGroup
	for p := 0; p < procs; p++ {
		ae := fmt.Sprintf("CONC%d", p+1)
		args := []string{"-xf", profile, "P", "-aet", ae, "-aec", calledAE, g.Host(), g.Port()}
		for j := 0; j < perProc; j++ {
			cf := pool[(p*perProc+j)%len(pool)]
			args = append(args, cf.Path)
			want[ae] = append(want[ae], cf.SOPInstanceUID)
			byUID[cf.SOPInstanceUID] = cf
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[p] = runTool(3*time.Minute, storescu, args...)
		}()
	}
	wg.Wait()
	for p, r := range results {
		if r.Code != 0 {
			t.Errorf("storescu %d: %v", p+1, r)
		}
	}

	objs, err := harness.SpooledFiles(g.SpoolDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != procs*perProc {
		t.Errorf("queue has %d objects after %d C-STOREs", len(objs), procs*perProc)
	}
	noPartials(t, g.SpoolDir)
	got := map[string][]string{}
	for _, p := range objs {
		o := readSpooled(t, p)
		u := o.Meta.SOPInstanceUID
		got[o.Meta.CallingAE] = append(got[o.Meta.CallingAE], u)
		cf, ok := byUID[u]
		if !ok {
			t.Errorf("%s: unexpected SOP Instance UID %s", filepath.Base(p), u)
			continue
		}
		w := reference[u]
		if o.Meta.SOPClassUID != cf.SOPClassUID || o.Meta.TransferSyntaxUID != cf.TransferSyntaxUID || w.ts != cf.TransferSyntaxUID {
			t.Errorf("%s (%s): class %s ts %s (storescp got %s), want %s %s", filepath.Base(p), cf.Name,
				o.Meta.SOPClassUID, o.Meta.TransferSyntaxUID, w.ts, cf.SOPClassUID, cf.TransferSyntaxUID)
		}
		if !bytes.Equal(o.DataSet, w.ds) && !bytes.Equal(o.DataSet, dataSetOf(t, cf)) {
			t.Errorf("%s (%s from %s): data set matches neither the file nor what storescp received (%s)",
				filepath.Base(p), cf.Name, o.Meta.CallingAE, firstDiff(o.DataSet, w.ds))
		}
	}
	for ae, uids := range want {
		g := append([]string(nil), got[ae]...)
		sort.Strings(uids)
		sort.Strings(g)
		if strings.Join(uids, ",") != strings.Join(g, ",") {
			t.Errorf("%s sent %d objects, %d spooled under its AE title; they differ", ae, len(uids), len(g))
		}
	}
	for ae := range got {
		if _, ok := want[ae]; !ok {
			t.Errorf("objects spooled under unknown calling AE %q", ae)
		}
	}
	// The log line follows the A-RELEASE-RP storescu waits for: poll.
	var ended []map[string]any
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ended = ended[:0]
		for _, rec := range g.LogRecords("association ended") {
			if strings.HasPrefix(fmt.Sprint(rec["calling_ae"]), "CONC") {
				ended = append(ended, rec)
			}
		}
		if len(ended) >= procs || time.Now().After(deadline) {
			break
		}
	}
	if len(ended) != procs {
		t.Errorf("%d associations ended in the log, want %d", len(ended), procs)
	}
	for _, rec := range ended {
		if rec["outcome"] != "released" || rec["stores"] != float64(perProc) || rec["store_failures"] != float64(0) {
			t.Errorf("association of %v ended %v with %v stores, %v failures", rec["calling_ae"], rec["outcome"], rec["stores"], rec["store_failures"])
		}
	}
}
