package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// probePrefix names the readiness probe's files. Hidden, and not objects
// (.dcm), so that the forwarder, Stats, the operator commands and recovery
// pass them by; Open removes those a crash left.
const probePrefix = ".probe-"

// CheckCommit proves that the spool can commit an object now, by doing
// what a commit does with a small file of its own: create it in incoming/,
// write and fsync it, link it into queue/ and fsync queue/. (A commit that
// renames instead of linking needs the same: writing into both
// directories.) Both names are removed before it returns. Readiness asks
// this: a spool whose queue/ cannot be written refuses every object even
// though its top directory and incoming/ can be.
func (s *Spool) CheckCommit() error {
	f, err := os.CreateTemp(s.incoming, probePrefix+"*")
	if err != nil {
		return fmt.Errorf("spool: cannot create files in %s/: %w", incomingDir, err)
	}
	name := f.Name()
	defer os.Remove(name)
	_, err = f.Write([]byte("dicomgw readiness probe\n"))
	if err == nil {
		err = s.sync.SyncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool: cannot write and fsync in %s/: %w", incomingDir, err)
	}
	linked := filepath.Join(s.queue, filepath.Base(name))
	if err := os.Link(name, linked); err != nil {
		return fmt.Errorf("spool: cannot link into %s/: %w", queueDir, err)
	}
	defer os.Remove(linked)
	if err := s.sync.SyncDir(s.queue); err != nil {
		return fmt.Errorf("spool: cannot fsync %s/: %w", queueDir, err)
	}
	if err := os.Remove(linked); err != nil {
		return fmt.Errorf("spool: cannot remove from %s/: %w", queueDir, err)
	}
	return nil
}

// removeProbes removes the probe files a crash left in queue/, and in the
// top directory, where earlier versions probed (incoming/ is emptied by
// recoverIncoming).
func (s *Spool) removeProbes() error {
	for _, dir := range []string{s.queue, s.root} {
		des, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		for _, de := range des {
			if !strings.HasPrefix(de.Name(), probePrefix) || !de.Type().IsRegular() {
				continue
			}
			if err := os.Remove(filepath.Join(dir, de.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("spool: removing a leftover probe: %w", err)
			}
		}
	}
	return nil
}
