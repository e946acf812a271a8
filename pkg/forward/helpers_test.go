package forward

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/part10"
)

const (
	ctClass     = "1.2.840.10008.5.1.4.1.1.2"
	explicitLE  = "1.2.840.10008.1.2.1"
	testImplUID = "2.25.424242"
)

// spec describes a spool-like file to write.
type spec struct {
	ID      string // spool id; also orders objects (oldest first)
	Study   string // "" leaves (0020,000D) out
	Series  string
	SOP     string
	Pixels  int  // bytes of Pixel Data
	Fill    byte // pattern seed of the pixel bytes
	Private bool // write the spool's private record (0002,0100)/(0002,0102) in the meta group
}

// dataSetBytes builds an Explicit VR Little Endian data set: SOP class and
// instance, study and series, then Pixel Data (OW, 4-byte length).
func dataSetBytes(s spec) []byte {
	var b []byte
	short := func(g, e uint16, vr, v string) {
		if len(v)%2 == 1 {
			v += "\x00"
		}
		b = binary.LittleEndian.AppendUint16(b, g)
		b = binary.LittleEndian.AppendUint16(b, e)
		b = append(b, vr...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
	}
	short(0x0008, 0x0016, "UI", ctClass)
	short(0x0008, 0x0018, "UI", s.SOP)
	if s.Study != "" {
		short(0x0020, 0x000D, "UI", s.Study)
	}
	if s.Series != "" {
		short(0x0020, 0x000E, "UI", s.Series)
	}
	px := s.Pixels &^ 1
	b = append(b, 0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(px))
	for i := range px {
		b = append(b, byte(i*7)+s.Fill)
	}
	return b
}

// writeObject writes a spool-like file (Part 10 meta, with the gateway's
// private record or not, then the data set) into dir and returns the
// Object the spool would describe.
func writeObject(t testing.TB, dir string, s spec) *Object {
	t.Helper()
	m := &part10.Meta{
		SOPClassUID: ctClass, SOPInstanceUID: s.SOP, TransferSyntaxUID: explicitLE,
		ImplementationClassUID: testImplUID, ImplementationVersionName: "SPOOL_1", SourceAE: "MODALITY",
	}
	if s.Private {
		m.PrivateCreator = testImplUID
		m.Private = []byte(`{"v":1,"remote_addr":"10.0.0.7:4242","association_id":"deadbeef"}`)
	}
	head := part10.AppendMeta(nil, m)
	ds := dataSetBytes(s)
	path := filepath.Join(dir, s.ID+".dcm")
	if err := os.WriteFile(path, append(head, ds...), 0o640); err != nil {
		t.Fatal(err)
	}
	return &Object{
		ID: s.ID, Open: fileOpener(path, int64(len(head)), int64(len(ds))), DataSize: int64(len(ds)),
		SOPClassUID: ctClass, SOPInstanceUID: s.SOP, TransferSyntaxUID: explicitLE,
		StudyInstanceUID: s.Study, SeriesInstanceUID: s.Series, CallingAE: "MODALITY",
		Received: time.Now().Add(-time.Minute),
	}
}

// fileOpener opens n bytes of the file at path from off, as the spool's
// opener does (without its check).
func fileOpener(path string, off, n int64) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.NewSectionReader(f, off, n), f}, nil
	}
}

// damagedOpener is the opener of an object whose spool copy fails its
// check: all bytes but the last are read, then an error wrapping
// ErrDamaged, as the spool's reader does.
func damagedOpener(data []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(bytes.NewReader(data[:len(data)-1]),
			errReader{fmt.Errorf("%w: queue/x.dcm: CRC-32C mismatch", ErrDamaged)})), nil
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// dataSetOf reads an object's data set through its opener.
func dataSetOf(t testing.TB, o *Object) []byte {
	t.Helper()
	rc, err := o.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fileDataSet reads the data set of a Part 10 file.
func fileDataSet(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off, err := dataSetOffset(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeQueue is an in-memory spool. Its retry records outlive any
// Forwarder, so a new Forwarder over the same fakeQueue is a restart.
type fakeQueue struct {
	mu      sync.Mutex
	objs    map[string]*Object
	state   map[string]string // queued, delivered, dead
	records map[string]RetryRecord
	reasons map[string]string
	details map[string]map[string]string

	delivered []string
	retries   []retryCall
	deads     []string
	describes int
	lists     int // QueuedIDs calls

	held    map[string]bool // described and not yet delivered or dead
	maxHeld int

	failDead   bool             // Dead fails (the spool cannot dead-letter)
	onDescribe func()           // called in each Describe, outside the lock
	damaged    map[string]error // Describe fails with this error for these IDs
}

type retryCall struct {
	ID     string
	Record RetryRecord
	At     time.Time
}

func newFakeQueue(objs ...*Object) *fakeQueue {
	q := &fakeQueue{
		objs: map[string]*Object{}, state: map[string]string{}, records: map[string]RetryRecord{},
		reasons: map[string]string{}, details: map[string]map[string]string{}, held: map[string]bool{},
	}
	q.add(objs...)
	return q
}

func (q *fakeQueue) add(objs ...*Object) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, o := range objs {
		q.objs[o.ID] = o
		q.state[o.ID] = "queued"
	}
}

func (q *fakeQueue) QueuedIDs() ([]string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.lists++
	var ids []string
	for id, s := range q.state {
		if s == "queued" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

func (q *fakeQueue) Describe(id string) (*Object, RetryRecord, error) {
	if q.onDescribe != nil {
		q.onDescribe()
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.describes++
	if q.state[id] != "queued" {
		return nil, RetryRecord{}, fmt.Errorf("describe %s: %w", id, fs.ErrNotExist)
	}
	if err := q.damaged[id]; err != nil {
		return nil, RetryRecord{}, err
	}
	q.held[id] = true
	q.maxHeld = max(q.maxHeld, len(q.held))
	o := *q.objs[id]
	return &o, q.records[id], nil
}

func (q *fakeQueue) Delivered(id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state[id] != "queued" {
		return fmt.Errorf("delivered %s: state %q: %w", id, q.state[id], fs.ErrNotExist)
	}
	q.state[id] = "delivered"
	delete(q.held, id)
	q.delivered = append(q.delivered, id)
	return nil
}

func (q *fakeQueue) Retry(id string, r RetryRecord) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state[id] != "queued" {
		return fmt.Errorf("retry %s: state %q: %w", id, q.state[id], fs.ErrNotExist)
	}
	q.records[id] = r
	q.retries = append(q.retries, retryCall{ID: id, Record: r, At: time.Now()})
	return nil
}

func (q *fakeQueue) Dead(id, reason string, details map[string]string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.failDead {
		return errors.New("dead letter directory is not writable")
	}
	if q.state[id] != "queued" {
		return fmt.Errorf("dead %s: state %q: %w", id, q.state[id], fs.ErrNotExist)
	}
	q.state[id] = "dead"
	delete(q.held, id)
	q.reasons[id] = reason
	q.details[id] = details
	q.deads = append(q.deads, id)
	return nil
}

func (q *fakeQueue) stateOf(id string) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.state[id]
}

func (q *fakeQueue) record(id string) RetryRecord {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.records[id]
}

func (q *fakeQueue) reason(id string) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.reasons[id]
}

func (q *fakeQueue) counts() (delivered, retries, deads int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.delivered), len(q.retries), len(q.deads)
}

func (q *fakeQueue) retriesOf(id string) []retryCall {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []retryCall
	for _, r := range q.retries {
		if r.ID == id {
			out = append(out, r)
		}
	}
	return out
}

// allDone reports whether no object is queued any more.
func (q *fakeQueue) allDone() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range q.state {
		if s == "queued" {
			return false
		}
	}
	return true
}

// checkAccounted asserts that nothing was lost: every object is delivered,
// dead, or still queued — and a queued object that ever failed has a
// durable retry record. want, when given, pins the state of some objects.
func (q *fakeQueue) checkAccounted(t testing.TB, want map[string]string) {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	for id := range q.objs {
		s := q.state[id]
		switch s {
		case "delivered", "dead", "queued":
		default:
			t.Errorf("object %s is in no state (%q): lost", id, s)
		}
		if w, ok := want[id]; ok && w != s {
			t.Errorf("object %s is %s, want %s", id, s, w)
		}
		if s == "dead" && q.reasons[id] == "" {
			t.Errorf("object %s dead-lettered without a reason", id)
		}
	}
	// Nothing was both delivered and dead-lettered, or recorded twice.
	seen := map[string]bool{}
	for _, id := range append(append([]string{}, q.delivered...), q.deads...) {
		if seen[id] {
			t.Errorf("object %s left the queue twice", id)
		}
		seen[id] = true
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
