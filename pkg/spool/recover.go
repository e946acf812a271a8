package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

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
		if err := s.sync.SyncDir(s.queue); err != nil {
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
