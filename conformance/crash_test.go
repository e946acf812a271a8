package conformance

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
)

// crashLedger is what the senders know: which objects got 0000, and how
// many attempts each took.
type crashLedger struct {
	mu       sync.Mutex
	acked    map[string]time.Time // SOP Instance UID -> when 0000 came
	attempts map[string]int
	statuses map[string]int // non-success statuses seen, by status
	errors   int            // C-STOREs cut off by a transport error
	assocs   int
}

func (l *crashLedger) ackedUIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.acked))
	for u := range l.acked {
		out = append(out, u)
	}
	return out
}

// crashSender sends objs to addr over associations of a few objects
// each, as a modality does: an object that did not get 0000 (the
// association broke, or it got a failure status) is sent again on a new
// association, until every one got 0000 or done is closed.
func crashSender(addr, ae string, objs []testObject, rng *rand.Rand, pace time.Duration, l *crashLedger, done <-chan struct{}) error {
	pending := append([]testObject(nil), objs...)
	for len(pending) > 0 {
		select {
		case <-done:
			return fmt.Errorf("%s gave up with %d objects not acknowledged", ae, len(pending))
		default:
		}
		c, err := dialErr(addr, ae, calledAE, storeContext(sopSecondaryCapture, tsExplicitLE))
		if err != nil {
			// The gateway is down (connection refused) or going down.
			time.Sleep(20 * time.Millisecond)
			continue
		}
		l.mu.Lock()
		l.assocs++
		l.mu.Unlock()
		n := min(len(pending), 3+rng.IntN(15))
		var retry []testObject
		broken := false
		for i, o := range pending[:n] {
			if broken {
				retry = append(retry, pending[i:n]...)
				break
			}
			time.Sleep(time.Duration(rng.Int64N(int64(2*pace) + 1)))
			l.mu.Lock()
			l.attempts[o.SOPInstanceUID]++
			l.mu.Unlock()
			rsp, err := c.Store(sopSecondaryCapture, o.SOPInstanceUID, tsExplicitLE, bytes.NewReader(o.DataSet))
			l.mu.Lock()
			switch {
			case err != nil:
				l.errors++
				broken = true
				retry = append(retry, o)
			case rsp.Status == dimse.StatusSuccess:
				l.acked[o.SOPInstanceUID] = time.Now()
			default:
				l.statuses[rsp.Status.String()]++
				retry = append(retry, o)
			}
			l.mu.Unlock()
		}
		if broken {
			c.Close()
		} else {
			c.Release() // an error here changes nothing: every answer is in
		}
		pending = append(retry, pending[n:]...)
	}
	return nil
}

// waitKill waits for the moment of a kill: the interval gap, or, aimed,
// the first moment in its second half (so that kills stay at least 0.1 s
// apart and the senders make progress between them) an object is being
// received.
func waitKill(t *testing.T, spoolDir string, gap time.Duration, aimed bool, sendersDone <-chan struct{}, n, kills int) {
	t.Helper()
	from := time.Now().Add(gap / 2)
	deadline := time.After(gap)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-sendersDone:
			t.Errorf("the senders finished before kill %d of %d: pacing too fast", n, kills)
			return
		case <-deadline:
			return
		case <-tick.C:
			if !aimed || time.Now().Before(from) {
				continue
			}
			if p, _ := harness.PartialFiles(spoolDir); len(p) > 0 {
				return
			}
		}
	}
}

// queuedUIDs reads the SOP Instance UIDs of the objects in a spool state
// directory.
func queuedUIDs(t *testing.T, spoolDir, state string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, o := range stateObjects(t, spoolDir, state) {
		out[o.Meta.SOPInstanceUID] = true
	}
	return out
}

// TestCrashConsistency: our requestor sends 300 objects from four senders
// at once while the gateway forwards them to a real Orthanc, and the test
// SIGKILLs the gateway at random moments (seeded; DICOMGW_CRASH_SEED
// replays a run's kill schedule and pacing) and restarts it on the same
// spool and port each time; the senders reconnect and send again what did
// not get 0000, as modalities do. The spool's promise (DESIGN.md, PS3.4
// B.2.3: 0000 only once the object is durable) is checked at each kill,
// with the gateway dead and nothing moving: every object acknowledged so
// far is queued in the spool or already in Orthanc. After each restart
// the partial objects the killed gateway left in incoming/ are gone. At
// the end every object is in Orthanc exactly once with its data set byte
// for byte, and the spool is empty: nothing queued, retrying, half
// written or dead.
func TestCrashConsistency(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("DICOMGW_CRASH_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DICOMGW_CRASH_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (DICOMGW_CRASH_SEED=%d replays the kill schedule and pacing)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	// 300 objects in four studies: mostly small, thirty of 1 MiB so that
	// kills also land in the middle of an object.
	dir := t.TempDir()
	var objs []testObject
	for i, spec := range []struct{ n, px int }{{90, 2048}, {90, 8192}, {90, 32768}, {30, 1 << 20}} {
		d := filepath.Join(dir, strconv.Itoa(i))
		os.Mkdir(d, 0o755)
		objs = append(objs, studyObjects(t, d, spec.n, spec.px)...)
	}
	rng.Shuffle(len(objs), func(i, j int) { objs[i], objs[j] = objs[j], objs[i] })

	// The kill schedule: 5 to 8 kills, 0.2 to 1.5 s apart; the senders
	// are paced to be still sending after the last one. Half the kills are
	// aimed: in the second half of their interval they come as soon as an
	// object is being received (a partial file in incoming/).
	kills := 5 + rng.IntN(4)
	gaps := make([]time.Duration, kills)
	aimed := make([]bool, kills)
	var span time.Duration
	for i := range gaps {
		gaps[i] = 200*time.Millisecond + time.Duration(rng.Int64N(int64(1300*time.Millisecond)))
		aimed[i] = rng.IntN(2) == 0
		span += gaps[i]
	}
	const senders = 4
	pace := (span + time.Second) * senders / time.Duration(len(objs))
	t.Logf("%d kills at intervals %v (aimed at an object being received: %v); senders pace about %v per object", kills, gaps, aimed, pace.Round(time.Millisecond))

	o := startOrthanc(t, nil)
	spoolDir := t.TempDir()
	args := append([]string{"--stow-url", o.BaseURL()}, fastRetry...)
	g := startGateway(t, spoolDir, args...)
	addr := g.Addr
	args = append(args, "--listen", addr)
	gateways := []*harness.Gateway{g}

	ledger := &crashLedger{acked: map[string]time.Time{}, attempts: map[string]int{}, statuses: map[string]int{}}
	giveUp := make(chan struct{})
	errs := make(chan error, senders)
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		var mine []testObject
		for i := s; i < len(objs); i += senders {
			mine = append(mine, objs[i])
		}
		srng := rand.New(rand.NewPCG(seed, uint64(s+1)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- crashSender(addr, fmt.Sprintf("CRASHSCU%d", s+1), mine, srng, pace, ledger, giveUp)
		}()
	}
	sendersDone := make(chan struct{})
	go func() { wg.Wait(); close(sendersDone) }()

	start := time.Now()
	partialsRemoved := 0
	for i, gap := range gaps {
		waitKill(t, spoolDir, gap, aimed[i], sendersDone, i+1, kills)
		g.Kill()
		acked := ledger.ackedUIDs()

		// The gateway is dead: nothing in the spool moves. Every object
		// acknowledged so far must be queued, or delivered already.
		queued := queuedUIDs(t, spoolDir, "queue")
		dead := queuedUIDs(t, spoolDir, "dead")
		inOrthanc, err := o.SOPInstanceUIDs()
		if err != nil {
			t.Fatal(err)
		}
		lost := 0
		for _, u := range acked {
			if !queued[u] && inOrthanc[u] == "" {
				lost++
				if lost <= 5 {
					t.Errorf("kill %d: %s was acknowledged with 0000 but is neither in the spool's queue nor in Orthanc (dead-lettered: %v)", i+1, u, dead[u])
				}
			}
		}
		receiving, err := harness.PartialFiles(spoolDir)
		if err != nil {
			t.Fatal(err)
		}
		// A kill during a commit's fsync leaves a complete, sealed object:
		// the restart queues it (it was not acknowledged; delivering it is
		// harmless) or finds it queued already. The rest are partial.
		var partials []string
		sealed := 0
		for _, p := range receiving {
			if harness.Sealed(p) {
				sealed++
			} else {
				partials = append(partials, p)
			}
		}

		g = startGateway(t, spoolDir, args...)
		gateways = append(gateways, g)
		rec, err := g.WaitLog("spool opened", 5*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := rec["partials_removed"].(float64); int(n) != len(partials) {
			t.Errorf("kill %d: %d partial objects in incoming/ before the restart, the spool says it removed %v", i+1, len(partials), rec["partials_removed"])
		}
		if n, _ := rec["recovered"].(float64); int(n) > sealed {
			t.Errorf("kill %d: %d sealed objects in incoming/ before the restart, the spool says it recovered %v", i+1, sealed, rec["recovered"])
		}
		partialsRemoved += len(partials)
		for _, p := range receiving {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("kill %d: partial %s still in incoming/ after the restart (%v)", i+1, filepath.Base(p), err)
			}
		}
		t.Logf("kill %d at %v: %d acknowledged, %d queued, %d in Orthanc, %d partial objects left (removed on restart), %d sealed (queued on restart: %v), %d lost",
			i+1, time.Since(start).Round(time.Millisecond), len(acked), len(queued), len(inOrthanc), len(partials), sealed, rec["recovered"], lost)
	}

	select {
	case <-sendersDone:
	case <-time.After(2 * time.Minute):
		close(giveUp)
		<-sendersDone
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	sendTime := time.Since(start)
	counts := waitDrained(t, g, 2*time.Minute)

	// Everything arrived, once, intact.
	ledger.mu.Lock()
	acked, resent := len(ledger.acked), 0
	for _, n := range ledger.attempts {
		if n > 1 {
			resent++
		}
	}
	ledger.mu.Unlock()
	if acked != len(objs) {
		t.Errorf("%d of %d objects acknowledged with 0000", acked, len(objs))
	}
	checkArrived(t, o, objs)
	if n, err := o.CountInstances(); err != nil || n != len(objs) {
		t.Errorf("Orthanc counts %d instances (%v), want %d: one per SOP Instance UID", n, err, len(objs))
	}

	// No orphans: nothing queued, retrying, half-written or dead, no
	// temporary files anywhere in the spool.
	if counts.Queued != 0 || counts.Retry != 0 || counts.Incoming != 0 || counts.Dead != 0 {
		t.Errorf("spool at the end: %v", counts)
	}
	if counts.Dead != 0 {
		for id, obj := range stateObjects(t, spoolDir, "dead") {
			t.Errorf("dead letter %s (%s): %s", id, obj.Meta.SOPInstanceUID, deadReason(t, spoolDir, id))
		}
	}
	var leftovers []string
	filepath.WalkDir(spoolDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".tmp") || strings.HasSuffix(p, ".part") || strings.HasSuffix(p, ".retry")) {
			leftovers = append(leftovers, p)
		}
		return nil
	})
	if len(leftovers) > 0 {
		t.Errorf("leftovers in the spool: %v", leftovers)
	}

	// The counts, from the logs of every gateway that ran.
	spooled, delivered, duplicates := 0, 0, 0
	seen := map[string]int{}
	for _, gw := range gateways {
		for _, r := range gw.LogRecords("object spooled") {
			spooled++
			seen[fmt.Sprint(r["sop_instance"])]++
		}
		delivered += len(gw.LogRecords("object delivered"))
	}
	for _, n := range seen {
		if n > 1 {
			duplicates++
		}
	}
	ledger.mu.Lock()
	t.Logf("seed %d: %d kills in %v; %d objects, %d acknowledged, %d sent more than once, %d C-STOREs cut off, other statuses %v, %d associations; "+
		"%d partial objects removed on restarts; %d commits to the spool (%d objects committed more than once: acknowledgement lost in a kill), %d deliveries logged",
		seed, kills, sendTime.Round(time.Millisecond), len(objs), acked, resent, ledger.errors, ledger.statuses, ledger.assocs,
		partialsRemoved, spooled, duplicates, delivered)
	ledger.mu.Unlock()
}
