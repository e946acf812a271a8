// Package spool is the gateway's durable queue on the slow data dir.
//
// An object is received into incoming/ as a complete Part 10 file that we
// write ourselves (file meta information, then the data set exactly as
// received), checked, sealed and fsynced, and linked into queue/: only then
// is it committed, and only then may its sender be told success (slots.go
// says how one fsync is enough). A crash at any moment leaves either a
// committed object or a leftover in incoming/ or slots/, which Open removes
// (or queues, when it is a sealed object: slots.go).
//
// File names are generated here: nothing a peer sends ever becomes a path.
package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/dicomgw/dicomgw/pkg/uid"
)

// Config configures a Spool.
type Config struct {
	// Dir is the spool directory, on the slow data disk.
	Dir string
	// ImplementationClassUID and ImplementationVersionName go into the
	// file meta information of every object (PS3.10 7.1).
	ImplementationClassUID    string
	ImplementationVersionName string
	// KeepDelivered moves delivered objects to delivered/ instead of
	// deleting them (purged later by age).
	KeepDelivered bool
	// Limits bound what the spool holds: above the high-water mark new
	// objects are refused (ErrFull) until it drains below the low one.
	Limits Limits
	// MaxObjectSize refuses larger objects (ErrTooLarge) as soon as they
	// pass it; 0: no limit.
	MaxObjectSize int64
	// UIDPolicy decides which Study and Series Instance UIDs a data set may
	// carry (the others are a *UIDError: the sender gets C000); the zero
	// value is uid.Lenient. A data set without them is accepted: the
	// forwarder decides what to do with it.
	UIDPolicy uid.Policy
	// Commit is how objects are committed: CommitAuto (the zero value)
	// for sealed slots where the file system allows them.
	Commit CommitMode
	// Syncer does every fsync of the spool; nil: fsync(2).
	Syncer Syncer
	// RecordReserve is the room (bytes) left in each object's record for
	// the destinations its commit writes into it (SetRecordReserve
	// changes it for the objects that begin after).
	RecordReserve int
}

// Directory layout under Config.Dir.
const (
	incomingDir  = "incoming"  // objects being received; removed on Open
	slotsDir     = "slots"     // empty files ready to receive objects (slots.go)
	queueDir     = "queue"     // committed objects, waiting to be forwarded
	deadDir      = "dead"      // objects that cannot be delivered, each with a reason file
	deliveredDir = "delivered" // delivered objects, when they are kept
	lockFile     = ".lock"     // the PID of the daemon holding the spool; see lock
	objectExt    = ".dcm"
	partialExt   = ".part"
	retryExt     = ".retry"  // beside a queued object: its failed attempts
	reasonExt    = ".reason" // beside a dead object: why
)

// Dir is a spool directory as the operator commands see it: the objects and
// their states, without the daemon's lock. Every change it makes is a
// rename or an atomic replace, so it is safe while the daemon runs.
type Dir struct {
	root          string
	keepDelivered bool
	cap           *capacity // the daemon's accounting; nil for operator commands
	// reuse, when set, takes a delivered object's file over rather than
	// have it removed, and returns its size (slots.reuse).
	reuse func(path string) (int64, bool)
}

// OpenDir opens an existing spool directory for inspection and the
// operator's changes.
func OpenDir(dir string) (*Dir, error) {
	for _, d := range []string{dir, filepath.Join(dir, queueDir)} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("spool: %s is not a spool directory (no %s)", dir, filepath.Base(d))
		}
	}
	return &Dir{root: dir}, nil
}

// Root is the spool directory.
func (d *Dir) Root() string { return d.root }

// Spool is a durable queue of DICOM objects, as the daemon holds it.
type Spool struct {
	*Dir
	cfg      Config
	log      *slog.Logger
	incoming string
	slotDir  string
	queue    string
	sync     Syncer
	locks    []*os.File // the spool directory and .lock, flocked: see lock
	seq      atomic.Uint32
	reserve  atomic.Int64 // Config.RecordReserve, then SetRecordReserve
	slots    *slots       // nil: every object committed the simple way
	adopted  []string     // ready slots Open found in slots/
}

// Open opens (creating if need be) the spool in cfg.Dir, takes its lock so
// that no second daemon shares it, removes what a crash left in incoming/,
// and makes sure the directories themselves are durable.
func Open(cfg Config, log *slog.Logger) (*Spool, error) {
	if cfg.Dir == "" {
		return nil, errors.New("spool: no directory configured")
	}
	if cfg.ImplementationClassUID == "" || cfg.ImplementationVersionName == "" {
		return nil, errors.New("spool: implementation class UID and version name are required")
	}
	if cfg.UIDPolicy != uid.Lenient && cfg.UIDPolicy != uid.Strict {
		return nil, fmt.Errorf("spool: unknown UID policy %v", cfg.UIDPolicy)
	}
	if cfg.Commit != CommitAuto && cfg.Commit != CommitRename {
		return nil, fmt.Errorf("spool: unknown commit mode %d", cfg.Commit)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Spool{
		Dir:      &Dir{root: cfg.Dir, keepDelivered: cfg.KeepDelivered},
		cfg:      cfg,
		log:      log,
		incoming: filepath.Join(cfg.Dir, incomingDir),
		slotDir:  filepath.Join(cfg.Dir, slotsDir),
		queue:    filepath.Join(cfg.Dir, queueDir),
		sync:     cfg.Syncer,
	}
	if s.sync == nil {
		s.sync = fsyncer{}
	}
	for _, d := range []string{cfg.Dir, s.incoming, s.slotDir, s.queue, filepath.Join(cfg.Dir, deadDir), filepath.Join(cfg.Dir, deliveredDir)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	if err := s.lock(); err != nil {
		return nil, err
	}
	recovered, removed, err := s.recoverIncoming()
	if err != nil {
		s.Close()
		return nil, err
	}
	if err := s.removeProbes(); err != nil {
		s.Close()
		return nil, err
	}
	for _, d := range []string{filepath.Dir(cfg.Dir), cfg.Dir, s.incoming, s.slotDir, s.queue, filepath.Join(cfg.Dir, deadDir), filepath.Join(cfg.Dir, deliveredDir)} {
		if err := s.sync.SyncDir(d); err != nil {
			s.Close()
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	st, err := s.Stats()
	if err != nil {
		s.Close()
		return nil, err
	}
	s.cap = newCapacity(cfg.Dir, cfg.Limits, st.Bytes(), log)
	s.reserve.Store(int64(max(cfg.RecordReserve, 0)))
	commit := "sealed slots"
	if cfg.Commit == CommitRename {
		commit = "rename"
	} else if err := sealsSupported(s.slotDir); err != nil {
		commit = "rename"
		log.Warn("the spool's file system lacks "+err.Error()+"; every object costs a second fsync", "dir", cfg.Dir)
	} else {
		s.slots = newSlots(s, s.adopted)
		s.Dir.reuse = s.slots.reuse
	}
	adopted := len(s.adopted)
	if s.slots == nil {
		for _, path := range s.adopted {
			os.Remove(path)
		}
		adopted = 0
	}
	s.adopted = nil
	q := st.States[StateQueued]
	log.Info("spool opened", "dir", cfg.Dir, "queued", q.Objects, "queued_bytes", q.Bytes, "dead", st.States[StateDead].Objects,
		"bytes_held", st.Bytes(), "partials_removed", removed, "recovered", recovered, "commit", commit, "slots_adopted", adopted)
	return s, nil
}

// SetRecordReserve sets the room left in the record of objects that begin
// from now on for the destinations their commit writes: enough for the
// longest list of destinations an object can be routed to.
func (s *Spool) SetRecordReserve(n int) { s.reserve.Store(int64(max(n, 0))) }

// Admit says whether a new object (or association) may start: an error
// wrapping ErrFull when the spool is above its high-water mark.
func (s *Spool) Admit() error { return s.cap.admit() }

// Full reports whether the spool is refusing new objects, and why. It
// looks at the file system's free space first, so that space freed while
// nothing arrives is seen at once (a readiness probe).
func (s *Spool) Full() (bool, string) {
	s.cap.update(s.cap.free())
	return s.cap.Full()
}

// Delivered removes (or keeps in delivered/) a delivered object, and its
// slot's name if that is still there. With slots, the file of a removed
// object that has no other name becomes a slot again (Dir.reuse).
func (s *Spool) Delivered(id string) error {
	if s.slots != nil {
		// The object's slot name first, if it is still there: otherwise a
		// crash now would queue it again, and its file would have two
		// names.
		s.slots.gone(id)
	}
	return s.Dir.Delivered(id)
}

// Used is the number of bytes the spool holds, in every state.
func (s *Spool) Used() int64 { return s.cap.Used() }

// Resync recounts the bytes the spool holds from a listing, which also
// sees what other processes (the operator commands) changed. The daemon
// calls it periodically.
func (s *Spool) Resync() error {
	st, err := s.Stats()
	if err != nil {
		return err
	}
	s.cap.resync(&st)
	return nil
}

// Close makes the last commits' queue entries durable, removes the unused
// slots and releases the spool's lock. No Writer may be in use.
func (s *Spool) Close() error {
	if s.locks == nil {
		return nil
	}
	if s.slots != nil {
		s.slots.close()
	}
	var err error
	for _, f := range s.locks {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	s.locks = nil
	return err
}

// newID returns a fresh object ID: the receive time in nanoseconds (so that
// names sort in arrival order), a per-process counter and random bits.
func (s *Spool) newID(t time.Time) string {
	return fmt.Sprintf("%016x-%04x%04x", t.UnixNano(), uint16(s.seq.Add(1)), uint16(rand.Uint32()))
}

// Entry is one committed object.
type Entry struct {
	ID   string
	Path string
	Size int64
	// StudyInstanceUID and SeriesInstanceUID, when Commit returns the
	// entry: what the data set says (for the audit log).
	StudyInstanceUID, SeriesInstanceUID string
	// Nonconforming, when Commit returns the entry, lists the data set's
	// Study and Series Instance UIDs that break PS3.5 9.1 in a way
	// Config.UIDPolicy tolerates.
	Nonconforming []uid.Finding
}

// List returns the queued objects in arrival order.
func (s *Spool) List() ([]Entry, error) {
	items, err := s.Items(StateQueued)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(items))
	for i, it := range items {
		out[i] = it.Entry
	}
	return out, nil
}
