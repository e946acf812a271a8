package spool

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
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
// network file systems) get the simple way for every object, as does a
// spool opened with Config.Commit = CommitRename.

const (
	slotPrefix = ".slot-"
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
	lastTake atomic.Int64 // when a slot was last taken, Unix nanoseconds
	closed   sync.Once
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
			n, err := p.prepare()
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
	if err := p.s.sync.SyncDir(p.s.slotDir); err != nil {
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
