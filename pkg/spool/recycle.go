package spool

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// recycledFile is a delivered object's file waiting to become a slot.
type recycledFile struct {
	path string
	size int64
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
	if err := p.s.sync.SyncDir(p.s.queue); err != nil {
		return fail(err)
	}
	for _, path := range batch {
		if err := os.Truncate(path, 0); err != nil {
			return fail(err)
		}
	}
	if err := p.s.sync.SyncDir(p.s.slotDir); err != nil {
		return fail(err)
	}
	// 0 when the pool filled meanwhile (hand removed them): the loop's
	// round ends.
	return p.hand(batch), nil
}
