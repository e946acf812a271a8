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
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dicomgw/dicomgw/internal/durable"
)

// Committing an object the simple way takes two cache flushes of the disk,
// which dominate the time a C-STORE takes on a small object: the file's
// fsync, then the queue directory's after the rename. Slots save the second
// one on the way to the acknowledgement.
//
// A slot is an empty file created ahead of time in slots/ under a hidden
// name (.slot-*), its directory entry already made durable. An object is
// written into a slot (also named incoming/<id>.part meanwhile, for whoever
// looks there); its commit sets a seal on the file (an extended attribute
// with the object's ID, size and CRC-32C) and fsyncs it: one flush, after
// which the object is durable under the slot's name and may be
// acknowledged. It is then linked into queue/ at once (visible to the
// forwarder), and in the background the queue directory is fsynced — once
// for all the objects committed meanwhile — before the slot's name is
// removed. At every moment at least one durable name holds the object.
//
// Slots have a directory of their own because creating a file holds its
// directory's lock while the file system looks for a free inode, which on
// some (ext4 without a journal, after many deletions) takes a millisecond or
// more: in incoming/ that stalled the links and unlinks of the objects being
// received. The pool is deep (slotsWanted) and refilled while the spool is
// quiet, so that a burst of small objects (a study) finds its slots made
// and no file is created while it is received; a longer burst refills it
// when it runs low. An object that finds it empty is committed the simple
// way.
//
// After a crash, Open links every slot whose seal checks out (size and
// CRC: a seal written with data that did not reach the disk does not) into
// queue/ unless the object is there already, and removes the rest, in
// slots/ and in incoming/ (where earlier versions kept their slots). An
// object delivered just before a crash whose slot had not been removed yet
// is queued again: it may be delivered twice, never lost.
//
// File systems without user extended attributes or hard links (some
// network file systems) get the simple way for every object.

const (
	slotPrefix = ".slot-"
	sealAttr   = "user.dicomgw.seal"
	sealMagic  = "dicomgw-seal-v1"
	// slotsWanted slots are kept ready (empty files, no descriptor held);
	// the pool is refilled when it falls below slotsLow, slotsBatch files
	// (one directory fsync) at a time. Deep, so that a study sent in one
	// burst finds its slots made during the quiet before it.
	slotsWanted = 1024
	slotsLow    = 256
	slotsBatch  = 64
	// slotsQuiet without a slot taken is quiet enough to make slots.
	slotsQuiet = 500 * time.Millisecond
	// A delivered object's file becomes a slot when it is at most
	// reuseMaxSize bytes and the files waiting to be emptied hold at most
	// reuseMaxBytes.
	reuseMaxSize  = 1 << 20
	reuseMaxBytes = 64 << 20
	// syncEvery is how long committed slots wait for the queue directory's
	// fsync, gathering the commits of that while into one.
	syncEvery = 100 * time.Millisecond
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// idPattern is what newID makes; a seal naming anything else is not ours.
var idPattern = regexp.MustCompile(`^[0-9a-f]{16}-[0-9a-f]{8}$`)

// recycledFile is a delivered object's file waiting to become a slot.
type recycledFile struct {
	path string
	size int64
}

// slot is a pre-created file in slots/, opened for its object.
type slot struct {
	f    *os.File
	path string
}

// slots keeps slots ready and makes committed objects' queue entries
// durable in the background.
type slots struct {
	s     *Spool
	ready chan string // paths of empty slot files whose entries are durable

	refill chan struct{}
	stop   chan struct{}
	done   sync.WaitGroup

	mu       sync.Mutex
	pending  map[string]string // object ID → its sealed slot, linked into queue/, waiting for the directory fsync
	flushing map[string]string // the batch whose directory fsync is running
	recycled []recycledFile    // delivered objects' files moved into slots/, to be emptied and made durable
	kick     chan struct{}

	started  time.Time // for the "spool slots ready" log line, once the pool is first full
	adopted  int
	filled   bool
	failing  bool         // the last refill failed (logged once until one succeeds)
	hold     sync.Mutex   // held by the refill loop while it prepares (tests pause it)
	lastTake atomic.Int64 // when a slot was last taken, Unix nanoseconds
	closed   sync.Once
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

func newSlots(s *Spool, adopted []string) *slots {
	p := &slots{
		s:       s,
		ready:   make(chan string, slotsWanted),
		refill:  make(chan struct{}, 1),
		stop:    make(chan struct{}),
		kick:    make(chan struct{}, 1),
		pending: make(map[string]string),
		started: time.Now(),
		adopted: len(adopted),
	}
	for _, path := range adopted {
		select {
		case p.ready <- path:
		default:
			os.Remove(path)
		}
	}
	p.done.Add(2)
	go p.refillLoop()
	go p.syncLoop()
	p.refill <- struct{}{}
	return p
}

// take returns a ready slot, opened, if there is one.
func (p *slots) take() (slot, bool) {
	for {
		var path string
		select {
		case path = <-p.ready:
		default:
			p.wake()
			return slot{}, false
		}
		p.lastTake.Store(time.Now().UnixNano())
		if len(p.ready) < slotsLow {
			p.wake()
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			// Removed behind our back (an operator): try the next one.
			p.s.log.Warn("a spool slot is gone", "file", filepath.Base(path), "err", err)
			continue
		}
		return slot{f: f, path: path}, true
	}
}

// wake asks the refill loop to run.
func (p *slots) wake() {
	select {
	case p.refill <- struct{}{}:
	default:
	}
}

// refillLoop makes slots: first from delivered objects' files (recycled),
// then new ones, in batches, each batch's entries made durable with one
// fsync of slots/ before they are handed out. Outside start-up it works
// when the spool is quiet (no slot taken for slotsQuiet), so that making
// files does not compete with a burst being received, or when the pool
// falls below slotsLow in a long burst, then only up to slotsLow plus a
// batch.
func (p *slots) refillLoop() {
	defer p.done.Done()
	tick := time.NewTicker(slotsQuiet / 2)
	defer tick.Stop()
	for {
		urgent := false
		select {
		case <-p.stop:
			return
		case <-p.refill:
			urgent = true
		case <-tick.C:
			if p.busy() {
				continue
			}
		}
		for {
			if p.filled && !urgent && p.busy() {
				break // a burst began: later
			}
			if p.filled && urgent && len(p.ready) >= slotsLow+slotsBatch {
				break // enough to go on with; the rest when quiet
			}
			p.hold.Lock()
			n, err := p.prepare()
			p.hold.Unlock()
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
			if n == 0 {
				if !p.filled {
					p.filled = true
					p.s.log.Info("spool slots ready", "slots", len(p.ready), "adopted", p.adopted, "took", time.Since(p.started).Round(time.Millisecond).String())
				}
				break
			}
			select {
			case <-p.stop:
				return
			default:
			}
		}
	}
}

// busy says whether a slot was taken within slotsQuiet.
func (p *slots) busy() bool {
	return time.Since(time.Unix(0, p.lastTake.Load())) < slotsQuiet
}

// prepare adds one batch of slots to the pool and says how many; 0 when
// the pool is full and nothing waits to be recycled.
func (p *slots) prepare() (int, error) {
	if n, err := p.recycle(); n > 0 || err != nil {
		return n, err
	}
	want := min(slotsWanted-len(p.ready), slotsBatch)
	if want <= 0 {
		return 0, nil
	}
	batch := make([]string, 0, want)
	drop := func() {
		for _, path := range batch {
			os.Remove(path)
		}
	}
	for range want {
		path := p.newPath()
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o640)
		if err != nil {
			drop()
			return 0, err
		}
		f.Close()
		batch = append(batch, path)
	}
	if err := durable.SyncDir(p.s.slotDir); err != nil {
		drop()
		return 0, err
	}
	return p.hand(batch), nil
}

// newPath names a new slot.
func (p *slots) newPath() string {
	return filepath.Join(p.s.slotDir, fmt.Sprintf("%s%016x", slotPrefix, rand.Uint64()))
}

// hand puts durable slots into the pool; those it has no room for are
// removed. It returns how many it put.
func (p *slots) hand(batch []string) int {
	n := 0
	for _, path := range batch {
		select {
		case p.ready <- path:
			n++
		default:
			os.Remove(path)
		}
	}
	return n
}

// reuse takes over the file of a delivered object (its only name,
// queue/<id>.dcm) as a slot, saving the file system an inode to free now
// and one to allocate later, which on some (ext4 without a journal) costs
// more processor time than the rest of a small object's commit. It says
// whether it did, and the size the file had; if not, the caller removes
// the file as usual.
func (p *slots) reuse(path string) (int64, bool) {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
		// Another name (the archive's hard link) keeps the file: not ours.
		return 0, false
	}
	// Its blocks are freed when the file is emptied, while the spool is
	// quiet; until then they are held outside the spool's accounting, so
	// only small files, and not too many bytes of them, wait for that.
	// (For a large object the inode is a small part of the cost anyway.)
	// (Workers delivering at once may each pass the byte check: the bound
	// is exceeded by at most a file per worker.)
	size := fi.Size()
	p.mu.Lock()
	var waiting int64
	for _, f := range p.recycled {
		waiting += f.size
	}
	room := len(p.ready)+len(p.recycled) < slotsWanted && size <= reuseMaxSize && waiting+size <= reuseMaxBytes
	p.mu.Unlock()
	if !room {
		return 0, false
	}
	// Unsealed first: a file in slots/ with a seal is an object to recover
	// after a crash, and this one is delivered. (Still queued after a
	// crash, it is delivered again, as a removed one can be.)
	if err := unix.Removexattr(path, sealAttr); err != nil && !errors.Is(err, unix.ENODATA) {
		return 0, false
	}
	dst := p.newPath()
	if err := os.Rename(path, dst); err != nil {
		return 0, false
	}
	p.mu.Lock()
	p.recycled = append(p.recycled, recycledFile{dst, size})
	p.mu.Unlock()
	return size, true // emptied by the refill loop, when the spool is quiet
}

// recycle turns the files reuse moved into slots/ into ready slots: the
// queue directory is fsynced first (so that no crash brings an old name
// back to a file about to hold another object), then each file is emptied,
// then slots/ is fsynced. It returns how many it handed out.
func (p *slots) recycle() (int, error) {
	p.mu.Lock()
	files := p.recycled
	p.recycled = nil
	p.mu.Unlock()
	if len(files) == 0 {
		return 0, nil
	}
	batch := make([]string, len(files))
	for i, f := range files {
		batch[i] = f.path
	}
	fail := func(err error) (int, error) {
		for _, path := range batch {
			os.Remove(path)
		}
		return 0, err
	}
	if err := durable.SyncDir(p.s.queue); err != nil {
		return fail(err)
	}
	for _, path := range batch {
		if err := os.Truncate(path, 0); err != nil {
			return fail(err)
		}
	}
	if err := durable.SyncDir(p.s.slotDir); err != nil {
		return fail(err)
	}
	// 0 when the pool filled meanwhile (hand removed them): the loop's
	// round ends.
	return p.hand(batch), nil
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
	if !ok && p.flushing != nil {
		// Its queue entry is being fsynced right now: the slot's name
		// goes here, not after the fsync (when a crash would queue it
		// again).
		path, ok = p.flushing[id]
		delete(p.flushing, id)
	}
	p.mu.Unlock()
	if ok {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			p.s.log.Warn("cannot remove a committed slot", "file", filepath.Base(path), "err", err)
		}
	}
}

func (p *slots) flush() {
	p.mu.Lock()
	batch := p.pending
	p.pending = make(map[string]string)
	p.flushing = batch
	p.mu.Unlock()
	if len(batch) == 0 {
		p.mu.Lock()
		p.flushing = nil
		p.mu.Unlock()
		return
	}
	err := durable.SyncDir(p.s.queue)
	p.mu.Lock()
	p.flushing = nil
	if err != nil {
		// The slots stay, and are tried again with the next commits (a
		// crash meanwhile: the next Open finds their objects queued).
		for id, path := range batch {
			p.pending[id] = path
		}
	}
	p.mu.Unlock()
	if err != nil {
		p.s.log.Error("cannot fsync the queue directory; the committed objects keep their slots until it works", "objects", len(batch), "err", err)
		return
	}
	for _, path := range batch {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			p.s.log.Warn("cannot remove a committed slot", "file", filepath.Base(path), "err", err)
		}
	}
}

// close stops the pool: the pending slots are flushed; the ready ones
// stay in slots/ for the next Open to adopt, and the recycled ones not yet
// emptied are removed.
func (p *slots) close() {
	p.closed.Do(p.shut)
}

func (p *slots) shut() {
	close(p.stop)
	p.done.Wait()
	p.mu.Lock()
	for _, f := range p.recycled {
		os.Remove(f.path)
	}
	p.recycled = nil
	p.mu.Unlock()
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

// recoverIncoming queues the sealed objects a crash left in slots/ or
// incoming/ and removes everything else there. It returns how many objects
// it queued and how many partial objects it removed.
func (s *Spool) recoverIncoming() (recovered, partials int, err error) {
	for _, dir := range []string{s.slotDir, s.incoming} {
		r, p, err := s.recoverDir(dir)
		recovered, partials = recovered+r, partials+p
		if err != nil {
			return recovered, partials, err
		}
	}
	return recovered, partials, nil
}

// recoverDir does recoverIncoming's work in one directory. A sealed object
// named twice (its slot, and its .part in incoming/) is queued once.
func (s *Spool) recoverDir(dir string) (recovered, partials int, err error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("spool: %w", err)
	}
	sealed := make(map[string]bool)
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, de.Name())
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
		s.log.Warn("queued an object committed before a crash (it may be delivered twice)", "id", id, "file", filepath.Join(filepath.Base(dir), de.Name()))
	}
	if recovered > 0 {
		if err := durable.SyncDir(s.queue); err != nil {
			return 0, 0, fmt.Errorf("spool: %w", err)
		}
	}
	for _, de := range des {
		path := filepath.Join(dir, de.Name())
		if dir == s.slotDir && !sealed[de.Name()] && emptySlot(path, de) {
			// A ready slot of the last run: used again, not remade.
			s.adopted = append(s.adopted, path)
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, 0, fmt.Errorf("spool: removing leftover: %w", err)
		}
		if !sealed[de.Name()] && !strings.HasPrefix(de.Name(), ".") {
			partials++
			s.log.Info("removed partial object left by an earlier run", "file", filepath.Join(filepath.Base(dir), de.Name()))
		}
	}
	return recovered, partials, nil
}

// emptySlot says whether a file in slots/ is a ready slot: a slot's name,
// a regular file, empty, one name, no seal.
func emptySlot(path string, de os.DirEntry) bool {
	if !strings.HasPrefix(de.Name(), slotPrefix) || !de.Type().IsRegular() {
		return false
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Size() != 0 || fi.Sys().(*syscall.Stat_t).Nlink != 1 {
		return false
	}
	_, err = unix.Lgetxattr(path, sealAttr, nil)
	return errors.Is(err, unix.ENODATA)
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
