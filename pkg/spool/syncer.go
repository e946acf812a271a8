package spool

import (
	"os"

	"github.com/dicomgw/dicomgw/internal/durable"
)

// Syncer makes what the spool wrote durable: a file's data, or the entries
// created, renamed or removed in a directory. Every fsync a Spool does
// (commits, the queue directory's in the background, slots, recovery,
// Open, the readiness probe) goes through the one in Config, so that a
// test can see which were done, and in what order with the links, renames
// and answers around them: a missing fsync cannot be seen any other way (a
// killed process leaves the page cache to the kernel, which writes it out
// all the same). The
// state changes of Dir, which the operator commands make too (dead
// letters, retry records, requeueing), use internal/durable directly.
type Syncer interface {
	SyncFile(f *os.File) error
	SyncDir(dir string) error
}

// fsyncer is the Syncer of a running spool: fsync(2).
type fsyncer struct{}

func (fsyncer) SyncFile(f *os.File) error { return f.Sync() }
func (fsyncer) SyncDir(dir string) error  { return durable.SyncDir(dir) }

// CommitMode is how objects are committed (slots.go).
type CommitMode int

const (
	// CommitAuto commits through sealed slots (one fsync per object) when
	// the spool's file system has user extended attributes and hard links,
	// and as CommitRename where it lacks them.
	CommitAuto CommitMode = iota
	// CommitRename commits every object by fsync, rename into queue/ and
	// an fsync of queue/ (two flushes per object).
	CommitRename
)
