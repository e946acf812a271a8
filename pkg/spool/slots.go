package spool

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dicomgw/dicomgw/internal/durable"
)

// Committing an object the simple way takes two cache flushes of the disk,
// which dominate the time a C-STORE takes on a small object: the file's
// fsync, then the queue directory's after the rename. Slots save the second
// one on the way to the acknowledgement.
//
// A slot is an empty file created ahead of time in incoming/ under a hidden
// name (.slot-*), its directory entry already made durable. An object is
// written into a slot; its commit sets a seal on the file (an extended
// attribute with the object's ID, size and CRC-32C) and fsyncs it: one
// flush, after which the object is durable under the slot's name and may be
// acknowledged. It is then linked into queue/ at once (visible to the
// forwarder), and in the background the queue directory is fsynced — once
// for all the objects committed meanwhile — before the slot's name is
// removed. At every moment at least one durable name holds the object.
//
// After a crash, Open links every slot whose seal checks out (size and
// CRC: a seal written with data that did not reach the disk does not) into
// queue/ unless the object is there already, and removes the rest. An
// object delivered just before a crash whose slot had not been removed yet
// is queued again: it may be delivered twice, never lost.
//
// File systems without user extended attributes or hard links (some
// network file systems) get the simple way for every object.

const (
	slotPrefix = ".slot-"
	sealAttr   = "user.dicomgw.seal"
	sealMagic  = "dicomgw-seal-v1"
	// slotsWanted slots are kept ready; the pool is refilled when it falls
	// below slotsLow.
	slotsWanted = 32
	slotsLow    = 16
	// syncEvery is how long committed slots wait for the queue directory's
	// fsync, gathering the commits of that while into one.
	syncEvery = 100 * time.Millisecond
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// idPattern is what newID makes; a seal naming anything else is not ours.
var idPattern = regexp.MustCompile(`^[0-9a-f]{16}-[0-9a-f]{8}$`)

// slot is a pre-created file in incoming/.
type slot struct {
	f    *os.File
	path string
}

// slots keeps slots ready and makes committed objects' queue entries
// durable in the background.
type slots struct {
	s     *Spool
	ready chan slot

	refill chan struct{}
	stop   chan struct{}
	done   sync.WaitGroup

	mu      sync.Mutex
	pending map[string]string // object ID → its sealed slot, linked into queue/, waiting for the directory fsync
	kick    chan struct{}

	failing bool // the last refill failed (logged once until one succeeds)
	closed  sync.Once
}

// sealsSupported tries an extended attribute and a hard link in dir.
func sealsSupported(dir string) error {
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	defer os.Remove(name)
	defer f.Close()
	if err := unix.Fsetxattr(int(f.Fd()), sealAttr, []byte("probe"), 0); err != nil {
		return fmt.Errorf("extended attributes: %w", err)
	}
	if err := os.Link(name, name+".link"); err != nil {
		return fmt.Errorf("hard links: %w", err)
	}
	return os.Remove(name + ".link")
}

func newSlots(s *Spool) *slots {
	p := &slots{
		s:       s,
		ready:   make(chan slot, slotsWanted),
		refill:  make(chan struct{}, 1),
		stop:    make(chan struct{}),
		kick:    make(chan struct{}, 1),
		pending: make(map[string]string),
	}
	p.done.Add(2)
	go p.refillLoop()
	go p.syncLoop()
	p.refill <- struct{}{}
	return p
}

// take returns a ready slot, if there is one.
func (p *slots) take() (slot, bool) {
	select {
	case sl := <-p.ready:
		if len(p.ready) < slotsLow {
			select {
			case p.refill <- struct{}{}:
			default:
			}
		}
		return sl, true
	default:
		select {
		case p.refill <- struct{}{}:
		default:
		}
		return slot{}, false
	}
}

// refillLoop creates slots in batches: the files, then one fsync of
// incoming/ for all of them, and only then are they handed out.
func (p *slots) refillLoop() {
	defer p.done.Done()
	for {
		select {
		case <-p.stop:
			return
		case <-p.refill:
		}
		batch, err := p.prepare()
		if err != nil {
			if !p.failing {
				p.s.log.Warn("cannot prepare spool slots; objects are committed the slower way meanwhile", "err", err)
				p.failing = true
			}
			select {
			case <-p.stop:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if p.failing {
			p.s.log.Info("spool slots prepared again")
			p.failing = false
		}
		for _, sl := range batch {
			p.ready <- sl
		}
	}
}

// prepare creates the slots the pool lacks and makes their entries durable.
func (p *slots) prepare() ([]slot, error) {
	var batch []slot
	drop := func() {
		for _, sl := range batch {
			sl.f.Close()
			os.Remove(sl.path)
		}
	}
	for len(p.ready)+len(batch) < slotsWanted {
		path := filepath.Join(p.s.incoming, fmt.Sprintf("%s%016x", slotPrefix, rand.Uint64()))
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o640)
		if err != nil {
			drop()
			return nil, err
		}
		batch = append(batch, slot{f: f, path: path})
	}
	if err := durable.SyncDir(p.s.incoming); err != nil {
		drop()
		return nil, err
	}
	return batch, nil
}

// committed hands over a sealed slot whose object is linked into queue/.
func (p *slots) committed(id, path string) {
	p.mu.Lock()
	p.pending[id] = path
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// syncLoop makes queue entries durable, then drops their slots' names.
func (p *slots) syncLoop() {
	defer p.done.Done()
	for {
		stopping := false
		select {
		case <-p.kick:
			// Gather the commits of a while into one fsync: a flush per
			// object here would cost what the slots save.
			select {
			case <-time.After(syncEvery):
			case <-p.stop:
				stopping = true
			}
		case <-p.stop:
			stopping = true
		}
		p.flush()
		if stopping {
			return
		}
	}
}

// gone drops the slot of an object that left the spool (delivered) before
// its slot was removed: otherwise a crash now would queue it again.
func (p *slots) gone(id string) {
	p.mu.Lock()
	path, ok := p.pending[id]
	delete(p.pending, id)
	p.mu.Unlock()
	if ok {
		if err := os.Remove(path); err != nil {
			p.s.log.Warn("cannot remove a committed slot", "file", filepath.Base(path), "err", err)
		}
	}
}

func (p *slots) flush() {
	p.mu.Lock()
	batch := p.pending
	p.pending = make(map[string]string)
	p.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	if err := durable.SyncDir(p.s.queue); err != nil {
		// The slots stay: the next Open recovers their objects.
		p.s.log.Error("cannot fsync the queue directory; the sealed objects stay in incoming/ until the next start", "objects", len(batch), "err", err)
		return
	}
	for _, path := range batch {
		if err := os.Remove(path); err != nil {
			p.s.log.Warn("cannot remove a committed slot", "file", filepath.Base(path), "err", err)
		}
	}
}

// close stops the pool: the pending slots are flushed, the ready ones
// removed.
func (p *slots) close() {
	p.closed.Do(p.shut)
}

func (p *slots) shut() {
	close(p.stop)
	p.done.Wait()
	for {
		select {
		case sl := <-p.ready:
			sl.f.Close()
			os.Remove(sl.path)
		default:
			return
		}
	}
}

// seal is the value of the seal attribute.
func seal(id string, size int64, crc uint32) []byte {
	return fmt.Appendf(nil, "%s %s %d %08x", sealMagic, id, size, crc)
}

// readSeal returns the ID of the object sealed in f when its seal is
// present and its size and CRC match the content; ok is false otherwise
// (no seal: a partial object or an empty slot).
func readSeal(f *os.File) (id string, ok bool, err error) {
	buf := make([]byte, 128)
	n, err := unix.Fgetxattr(int(f.Fd()), sealAttr, buf)
	if err != nil {
		if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
			return "", false, nil
		}
		return "", false, err
	}
	fields := strings.Fields(string(buf[:n]))
	if len(fields) != 4 || fields[0] != sealMagic || !idPattern.MatchString(fields[1]) {
		return "", false, nil
	}
	size, err1 := strconv.ParseInt(fields[2], 10, 64)
	crc, err2 := strconv.ParseUint(fields[3], 16, 32)
	if err1 != nil || err2 != nil {
		return "", false, nil
	}
	fi, err := f.Stat()
	if err != nil {
		return "", false, err
	}
	if fi.Size() != size {
		return "", false, nil
	}
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return "", false, err
	}
	if h.Sum32() != uint32(crc) {
		return "", false, nil
	}
	return fields[1], true, nil
}

// recoverIncoming queues the sealed objects a crash left in incoming/ and
// removes everything else there. It returns how many objects it queued and
// how many partial objects it removed.
func (s *Spool) recoverIncoming() (recovered, partials int, err error) {
	des, err := os.ReadDir(s.incoming)
	if err != nil {
		return 0, 0, fmt.Errorf("spool: %w", err)
	}
	sealed := make(map[string]bool)
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		path := filepath.Join(s.incoming, de.Name())
		f, err := os.Open(path)
		if err != nil {
			return 0, 0, fmt.Errorf("spool: %w", err)
		}
		id, ok, err := readSeal(f)
		f.Close()
		if err != nil {
			return 0, 0, fmt.Errorf("spool: reading %s: %w", de.Name(), err)
		}
		if !ok {
			continue
		}
		sealed[de.Name()] = true
		if s.holds(id) {
			continue
		}
		if err := os.Link(path, filepath.Join(s.queue, id+objectExt)); err != nil {
			return 0, 0, fmt.Errorf("spool: recovering %s: %w", id, err)
		}
		recovered++
		s.log.Warn("queued an object committed before a crash (it may be delivered twice)", "id", id, "file", de.Name())
	}
	if recovered > 0 {
		if err := durable.SyncDir(s.queue); err != nil {
			return 0, 0, fmt.Errorf("spool: %w", err)
		}
	}
	for _, de := range des {
		path := filepath.Join(s.incoming, de.Name())
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, 0, fmt.Errorf("spool: removing leftover: %w", err)
		}
		if !sealed[de.Name()] && !strings.HasPrefix(de.Name(), ".") {
			partials++
			s.log.Info("removed partial object left by an earlier run", "file", de.Name())
		}
	}
	return recovered, partials, nil
}

// holds says whether the spool has the object id in any state.
func (s *Spool) holds(id string) bool {
	for _, st := range States {
		if _, err := os.Lstat(filepath.Join(s.root, st.dir(), id+objectExt)); err == nil {
			return true
		}
	}
	return false
}
