package spool

import (
	"errors"
	"os"
	"path/filepath"
	"time"
)

// The queue directory's fsync, in the background: see slots.go.

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
	err := p.s.sync.SyncDir(p.s.queue)
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
